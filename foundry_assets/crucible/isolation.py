"""Training in a child process, so that nothing it does to the process outlives it.

Unsloth patches transformers process-wide when it loads a model (on CUDA its Llama rotary embedding keeps its cos/sin
tables on the GPU, so a later CPU/float32 load in the same process fails in `apply_rotary_pos_emb`), and the
training's CUDA caching allocator keeps its memory until the process ends. `train_adapter_isolated` runs
`train.train_adapter` in a fresh interpreter (multiprocessing "spawn": no inherited CUDA context, no inherited
patches) and returns its `TrainResult`; when the child exits, its GPU memory goes back to the node and the parent's
transformers is untouched for merge and exam.

- Loss records stream back while training runs and are handed to `on_log` in the parent (the audit trail is written
  by the caller, in order).
- A `FoundryError` raised in the child is raised again in the parent as the same class with the same message.
- A child that dies (SIGKILL, the OOM killer, a segfault in a kernel) is a `TrainingError` naming the exit signal;
  a child that raised anything else is a `TrainingError` carrying the last lines of its traceback.
- The child is killed if the parent dies (Linux `PR_SET_PDEATHSIG`) or if the parent's wait is interrupted (a run
  terminated from the UI), so no orphan keeps training and holding the GPU.
"""

import contextlib
import multiprocessing
import os
import queue
import signal
import time
import traceback
from collections.abc import Callable
from typing import Any

from foundry_assets import errors
from foundry_assets.console import quiet_third_party
from foundry_assets.crucible.result import TrainResult
from foundry_assets.errors import FoundryError, TrainingError
from foundry_assets.processes import die_with_parent

_POLL_S = 0.5


def _child(events: Any, kwargs: dict[str, Any]) -> None:
    """Entry point of the training process: train, then send ("result", TrainResult) or ("error", …)."""
    die_with_parent()
    # stdout is the CLI's summary: what Unsloth, TRL and torch print goes to the step's stderr instead
    os.dup2(2, 1)
    quiet_third_party()
    try:
        from foundry_assets.crucible.train import train_adapter

        result = train_adapter(**kwargs, on_log=lambda step, loss: events.put(("log", step, loss)))
        events.put(("result", result))
    except FoundryError as error:
        events.put(("error", type(error).__name__, str(error), ""))
    except BaseException as error:  # reported to the parent, which raises TrainingError with the traceback
        tail = "".join(traceback.format_exception(error)[-6:])
        events.put(("error", "", f"{type(error).__name__}: {error}", tail))


def _raise_from_child(name: str, message: str, tail: str) -> None:
    cls = getattr(errors, name, None) if name else None
    if isinstance(cls, type) and issubclass(cls, FoundryError):
        raise cls(message)
    raise TrainingError(f"training failed in its process: {message}" + (f"\n{tail}" if tail else ""))


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def train_adapter_isolated(
    *, on_log: Callable[[int, float], None] | None = None, **kwargs: Any
) -> TrainResult:
    """`train.train_adapter(**kwargs)` in a child process; `on_log(step, loss)` is called here, in the parent."""
    called = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    events = context.Queue()
    process = context.Process(target=_child, args=(events, kwargs), name="foundry-crucible")
    process.start()
    outcome: tuple[Any, ...] | None = None
    try:
        while outcome is None:
            try:
                event = events.get(timeout=_POLL_S)
            except queue.Empty:
                if process.is_alive():
                    continue
                try:  # the child is gone: whatever it sent before exiting is already in the pipe
                    event = events.get(timeout=_POLL_S)
                except queue.Empty:
                    raise TrainingError(
                        f"the training process (pid {process.pid}) {_exit_reason(process.exitcode)} before it "
                        "reported a result (out of host memory? see the step's stderr); no adapter was saved"
                    ) from None
            if event[0] != "log":
                outcome = event
            elif on_log is not None:
                on_log(int(event[1]), float(event[2]))
        process.join()
    finally:
        if process.is_alive():
            process.kill()
            process.join()
        events.close()
    if outcome[0] == "error":
        _raise_from_child(*outcome[1:])
    result: TrainResult = outcome[1]
    if result.first_step_at is not None:
        # perf_counter is CLOCK_MONOTONIC on Linux, one clock for every process: start-up counts the new
        # interpreter and its imports too, from this call to the end of the first optimizer step
        result.time_to_first_step_s = round(result.first_step_at - called, 2)
    return result
