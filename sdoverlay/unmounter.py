"""Which files umount(8) runs from, to know when an overlay must be detached lazily.

When an overlay covers /usr/bin/umount or a library it loads, the umount
process itself keeps the overlay busy and a plain unmount always fails
("target is busy"); only MNT_DETACH (umount -l) can remove it.
"""

from __future__ import annotations

import os

from sdoverlay import paths

UMOUNT = "/usr/bin/umount"
# The dynamic loader and the C library, as this process maps them.
_RUNTIME_NAMES = ("libc.so", "ld-linux", "ld64.so", "ld.so")
_tool_files: frozenset[str] | None = None  # the same for the life of a process


def unmount_tool_files() -> frozenset[str]:
    """umount(8), and the C library and loader, with symlinks resolved.

    Not umount's own libraries (libmount, libblkid, libselinux, ...) by
    name: they live in the loader's default dir, the C library's, so an
    overlay TARGET (a directory) covers one of them exactly when it covers
    libc. That answer used to come from `ldd /usr/bin/umount`, a subprocess
    on every generator run at boot (+12 ms, issue 9); tests/test_logic.py
    checks the two agree on this machine.
    """
    global _tool_files
    if _tool_files is not None:
        return _tool_files
    files = {os.path.realpath(UMOUNT)}
    with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
        for line in maps:
            path = line.rstrip("\n").split(maxsplit=5)[-1]
            if path.startswith("/") and os.path.basename(path).startswith(_RUNTIME_NAMES):
                files.add(os.path.realpath(path))
    _tool_files = frozenset(files)
    return _tool_files


def needs_lazy_unmount(target: str, tool_files: frozenset[str] | None = None) -> bool:
    files = unmount_tool_files() if tool_files is None else tool_files
    return any(paths.is_within(path, target) for path in files)
