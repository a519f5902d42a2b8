"""Which processes use a mount: by its mount ID, as the kernel sees it.

A path under TARGET says nothing about which mount a process uses (the
overlay, or what lies beneath it), and after a lazy unmount the detached
overlay has no path at all. Mount IDs are exact: /proc/PID/fdinfo/N names
the mount of each open file, and a /proc/PID/{cwd,root} or map_files link
opened with O_PATH resolves to the very mount the process holds (so does
/proc/PID/exe: a running program holds the mount it was started from), whose ID
our own fdinfo then shows. A detached mount keeps its ID until it is freed.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from sdoverlay import sizes


@dataclasses.dataclass(frozen=True)
class Holder:
    pid: int
    command: str

    def __str__(self) -> str:
        return f"{self.pid} ({self.command})"


def _fdinfo_mount_id(path: str) -> int | None:
    try:
        with open(path, encoding="ascii", errors="replace") as file:
            for line in file:
                if line.startswith("mnt_id:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _link_mount_id(link: str) -> int | None:
    try:
        fd = os.open(link, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return _fdinfo_mount_id(f"/proc/self/fdinfo/{fd}")
    finally:
        os.close(fd)


def _uses(pid: str, mount_ids: set[int]) -> bool:
    base = f"/proc/{pid}"
    for link in ("cwd", "root", "exe"):  # exe: a program run from the overlay (PID 1 after daemon-reexec)
        if _link_mount_id(f"{base}/{link}") in mount_ids:
            return True
    try:
        fds = os.listdir(f"{base}/fdinfo")
    except OSError:
        fds = []
    if any(_fdinfo_mount_id(f"{base}/fdinfo/{fd}") in mount_ids for fd in fds):
        return True
    try:
        mapped = os.listdir(f"{base}/map_files")  # needs CAP_SYS_ADMIN, as root has
    except OSError:
        mapped = []
    return any(_link_mount_id(f"{base}/map_files/{entry}") in mount_ids for entry in mapped)


def holders(mount_ids: set[int]) -> list[Holder]:
    """Every process whose cwd, root, open files or mapped files lie on one
    of MOUNT_IDS. This one too: sdoverlay's service, started after an
    `unlock /usr`, runs from that overlay itself until it exits idle."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        if _uses(pid, mount_ids):
            try:
                with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as file:
                    command = file.read().strip()
            except OSError:
                continue  # gone meanwhile
            found.append(Holder(int(pid), command))
    return sorted(found, key=lambda holder: holder.pid)


def listed(found: list[Holder], most: int = 5) -> str:
    text = ", ".join(str(holder) for holder in found[:most])
    return text + (f" and {len(found) - most} more" if len(found) > most else "")


def detached_text(still_used_by: list[dict[str, Any]], held_bytes: int) -> str:
    users = listed([Holder(**holder) for holder in still_used_by])
    return (f"detached lazily: still used by {users}; {sizes.human_bytes(held_bytes)} stay allocated until they exit "
            "(listed as 'detached')")
