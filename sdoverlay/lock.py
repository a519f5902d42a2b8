"""One host-wide lock for every verb that changes overlays.

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
from collections.abc import Iterator

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
    if fd is None:
        yield  # see _open: systemd and polkit refuse this caller's changes anyway
        return
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    holder = _holder(fd)
                    raise OperationFailed(
                        f"another sdoverlay command{holder} has held {LOCK_FILE} for over {wait:.0f} s; try again later"
                    ) from None
                time.sleep(_POLL_SECONDS)
        if os.geteuid() == 0:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _open() -> int | None:
    """The lock file, opened. flock(2) needs no write access, so any caller
    takes the same lock read-only; only root creates it. A caller who is not
    root and finds no lock file yet gets None: no sdoverlay change has run
    since boot, and systemd asks polkit about each of this caller's requests
    (the D-Bus service of the user-overlays issue takes the lock for them)."""
    flags = os.O_CLOEXEC | os.O_NOFOLLOW
    if os.geteuid() == 0:
        os.makedirs(LOCK_DIR, 0o755, exist_ok=True)
        return os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT | flags, 0o644)
    try:
        return os.open(LOCK_FILE, os.O_RDONLY | flags)
    except FileNotFoundError:
        return None


def _holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""
