"""GPU memory "held after training", read as `defs/crucible.py` reads it, once a child process that held the memory
has exited: at once (the reading before 2026-11-30) against `device_memory_held_gib` (waits until two readings agree).

    python benchmarks/gpu_memory_after_child.py     # one GPU machine; table on stdout

The child allocates GIB_IN_CHILD GiB with torch (as the training process would), exits; the parent has its own CUDA
context open (as the Dagster step process has). No Dagster, no model: the driver's reclaim of an exited process is
what is measured. Five rounds.
"""

import multiprocessing
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
GIB_IN_CHILD = 24


def _child(gib: int) -> None:
    import torch

    blocks = [torch.empty(1024**3, dtype=torch.uint8, device="cuda") for _ in range(gib)]
    torch.cuda.synchronize()
    del blocks  # left to the process exit, like the training process's allocator cache


def main() -> int:
    import torch

    from foundry_assets.crucible.telemetry import GIB, device_memory_held_gib

    torch.zeros(1, device="cuda")  # the parent's own context, as in the Dagster step
    free, total = torch.cuda.mem_get_info()
    own = (total - free) / GIB
    rows = []
    context = multiprocessing.get_context("spawn")
    for round_ in range(5):
        child = context.Process(target=_child, args=(GIB_IN_CHILD,))
        child.start()
        child.join()
        started = time.perf_counter()
        free, total = torch.cuda.mem_get_info()
        at_once = (total - free) / GIB
        settled = device_memory_held_gib("cuda")
        rows.append((round_ + 1, at_once, settled, time.perf_counter() - started))
    print(
        f"{torch.cuda.get_device_name()}: parent's own context {own:.2f} GiB; child held {GIB_IN_CHILD} GiB"
    )
    print("| round | read at once GiB | device_memory_held_gib GiB | time to settle s |")
    print("|---|---|---|---|")
    for round_, at_once, settled, seconds in rows:
        print(f"| {round_} | {at_once:.2f} | {settled:.2f} | {seconds:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
