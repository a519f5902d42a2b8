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

import contextlib
import fcntl
import os
import time
from collections.abc import AsyncIterator

from sdoverlay.dbusnext import asyncio  # without ssl: see there
from sdoverlay.errors import OperationFailed

LOCK_DIR = "/run/sdoverlay"
LOCK_FILE = f"{LOCK_DIR}/lock"
# Longer than any one verb takes (a copy of a large SOURCE included), so a
# waiting caller gets the lock, runs its checks and is told of a conflict.
WAIT_SECONDS = 120.0
_POLL_SECONDS = 0.05


class LockBusy(OperationFailed):
    """Another request holds the lock longer than the caller would wait."""


def _try_lock() -> int | None:
    """The lock file's descriptor, locked; None while another holds it."""
    try:
        os.makedirs(LOCK_DIR, 0o755, exist_ok=True)
        fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    except OSError as error:
        raise OperationFailed(f"cannot take sdoverlay's lock {LOCK_FILE}: {error.strerror}") from error
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextlib.asynccontextmanager
async def held_async(wait: float = WAIT_SECONDS) -> AsyncIterator[None]:
    """Hold the host-wide lock for the block. Waiting for it does not stop
    the service's event loop from answering other callers (each holder opens
    the file anew, and flock(2) locks are per open file, so two requests in
    one process exclude each other too)."""
    deadline = time.monotonic() + wait
    while (fd := _try_lock()) is None:
        if time.monotonic() > deadline:
            raise LockBusy(f"another sdoverlay request has held {LOCK_FILE} for over {wait:.0f} s; try again later")
        await asyncio.sleep(_POLL_SECONDS)
    try:
        yield
    finally:
        os.close(fd)  # releases the lock
