"""Which files umount(8) runs from, to know when an overlay must be detached lazily.

When an overlay covers /usr/bin/umount or a library it loads, the umount
process itself keeps the overlay busy and a plain unmount always fails
("target is busy"); only MNT_DETACH (umount -l) can remove it.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess

from sdoverlay import paths

UMOUNT = "/usr/bin/umount"


@functools.cache
def unmount_tool_files() -> frozenset[str]:
    """umount(8) and the shared objects it maps, with symlinks resolved."""
    files = {os.path.realpath(UMOUNT)}
    # ldd on a system binary is safe (it is only unsafe on untrusted ones).
    try:
        completed = subprocess.run(["ldd", UMOUNT], capture_output=True, text=True, check=False)
    except OSError:
        completed = None
    if completed is not None and completed.returncode == 0:
        listing = completed.stdout
    else:
        # No ldd (it is part of the C library's tools, not of every image):
        # the libraries this process maps come from the same dirs (libc, the
        # loader), which is where umount's own are found too.
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            listing = "\n".join(line.split()[-1] for line in maps if ".so" in line)
    for match in re.finditer(r"(/\S+)", listing):
        files.add(os.path.realpath(match.group(1)))
    return frozenset(files)


def needs_lazy_unmount(target: str, tool_files: frozenset[str] | None = None) -> bool:
    files = unmount_tool_files() if tool_files is None else tool_files
    return any(paths.is_within(path, target) for path in files)
