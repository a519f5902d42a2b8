"""Every failure the CLI reports, each with the exit code documented in the README."""

from __future__ import annotations

import errno


class ExitCode:
    """The exit codes, as plain ints: not an enum.IntEnum, since the
    generator imports this module and enum was 1.7 ms of its ~8 ms of
    imports (issue 9)."""

    OK = 0
    FAILED = 1  # the operation was tried and failed (systemd job, mount, copy)
    INVALID = 2  # bad input; click's own usage errors use 2 as well
    NOT_FOUND = 3  # no overlay of that name, or a missing SOURCE/TARGET
    CONFLICT = 4  # the name or the target is already in use
    PERMISSION = 5  # the caller may not do this
    LIMIT = 6  # over a limit: --size smaller than SOURCE, or the owner's quota


class SdoverlayError(Exception):
    """An error with a one-line message and an exit code."""

    exit_code = ExitCode.FAILED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class OperationFailed(SdoverlayError):
    exit_code = ExitCode.FAILED


class InvalidInput(SdoverlayError):
    exit_code = ExitCode.INVALID


class NotFound(SdoverlayError):
    exit_code = ExitCode.NOT_FOUND


class Conflict(SdoverlayError):
    exit_code = ExitCode.CONFLICT


class PermissionDenied(SdoverlayError):
    exit_code = ExitCode.PERMISSION


class LimitExceeded(SdoverlayError):
    exit_code = ExitCode.LIMIT


def as_sdoverlay_error(error: BaseException) -> SdoverlayError:
    """Any failure as one line with an exit code: never a traceback (issue 7, item 8)."""
    if isinstance(error, SdoverlayError):
        return error
    if isinstance(error, OSError):
        what = f"{error.strerror or error}" + (f": {error.filename}" if error.filename else "")
        if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return PermissionDenied(f"permission denied: {what}")
        return OperationFailed(what)
    return OperationFailed(f"internal error: {type(error).__name__}: {error}")
