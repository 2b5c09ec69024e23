"""Child processes that must not outlive the process that started them."""

import contextlib
import ctypes
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (`PR_SET_PDEATHSIG`); a no-op elsewhere.

    Call it first thing in a child (or as a `preexec_fn`), so a killed parent leaves no orphan holding a GPU or a queue.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
