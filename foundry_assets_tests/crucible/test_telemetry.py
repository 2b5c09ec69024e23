from foundry_assets.crucible.telemetry import GIB, device_memory_held_gib


def test_memory_held_is_read_after_the_driver_has_returned_an_exited_process_memory() -> None:
    total = 140 * GIB
    # the training process has exited; the driver frees its 6 GiB over the next readings, then nothing changes
    frees = iter([total - 7 * GIB, total - 4 * GIB, total - 1 * GIB, total - 1 * GIB, total - 1 * GIB])
    held = device_memory_held_gib("cuda", read=lambda: (next(frees), total), poll_s=0.0)
    assert held == 1.0


def test_memory_held_stops_waiting_at_the_settle_limit() -> None:
    total = 140 * GIB
    used = iter(range(1, 10_000))  # never settles: another process keeps allocating
    held = device_memory_held_gib(
        "cuda", read=lambda: (total - next(used) * GIB, total), settle_s=0.05, poll_s=0.01
    )
    assert held is not None and 1.0 < held < 10_000


def test_no_reading_off_cuda() -> None:
    assert device_memory_held_gib("cpu") is None
