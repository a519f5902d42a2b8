"""One host-wide lock for every verb that changes overlays, taken by sdoverlay's service.

The checks a new overlay must pass (name free, no overlap with another
overlay, quota) and its creation must be one step, or two racing
`apply`s on /usr/share and /usr/share/doc both pass the checks and both
mount (issue 7, item 3: 9 of 11 rounds). The lock is held from the first
check to the end of the last job, by apply, unlock, reset, remove, persist
and gc alike, so while it is held nothing of sdoverlay's is half-done by a
live process: anything found half-done (a hold unit, a partial copy) was
left by one that was killed, and may be recovered or collected.

flock(2) on a file under /run: the kernel drops it when its holder dies,
even by SIGKILL, so a killed command never leaves the lock taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from collections.abc import AsyncIterator, Iterator

from sdoverlay.errors import OperationFailed

LOCK_DIR = "/run/sdoverlay"
LOCK_FILE = f"{LOCK_DIR}/lock"
# Longer than any one verb takes (a copy of a large SOURCE included), so a
# waiting caller gets the lock, runs its checks and is told of a conflict.
WAIT_SECONDS = 120.0
_POLL_SECONDS = 0.05


@contextlib.contextmanager
def held(wait: float = WAIT_SECONDS) -> Iterator[None]:
    """Hold the host-wide lock for the duration of the block."""
    try:
        fd = _open()
    except OSError as error:
        raise OperationFailed(f"cannot take sdoverlay's lock {LOCK_FILE}: {error.strerror}") from error
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _holder(fd)
                    raise LockBusy(
                        f"another sdoverlay command{holder} has held {LOCK_FILE} for over {wait:.0f} s; try again later"
                    ) from None
                time.sleep(_POLL_SECONDS)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


class LockBusy(OperationFailed):
    """Another process holds the lock longer than the caller would wait."""


def _open() -> int:
    os.makedirs(LOCK_DIR, 0o755, exist_ok=True)
    return os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)


def _holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""


@contextlib.asynccontextmanager
async def held_async(wait: float = WAIT_SECONDS) -> AsyncIterator[None]:
    """held(), for the service's event loop: waiting for the lock does not
    stop it from answering other callers (each holder opens the file anew,
    and flock(2) locks are per open file, so two requests in one process
    exclude each other too)."""
    deadline = time.monotonic() + wait
    with contextlib.ExitStack() as stack:
        while True:
            try:
                stack.enter_context(held(wait=0))
                break
            except LockBusy:
                if time.monotonic() > deadline:
                    raise LockBusy(f"another sdoverlay request has held {LOCK_FILE} for over {wait:.0f} s; "
                                   "try again later") from None
                await asyncio.sleep(_POLL_SECONDS)
        yield
