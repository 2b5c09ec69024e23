"""The CLI's exit codes and its one-line error, shared by every command module."""

import sys

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130


def fail(message: str, code: int) -> int:
    """Print `foundry: message` on stderr and return `code` (the command's exit code)."""
    print(f"foundry: {message}", file=sys.stderr)
    return code
