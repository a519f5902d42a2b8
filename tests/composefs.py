"""A root shaped as composefs makes one (bootc, Fedora atomic): /usr a
read-only overlayfs whose lower layer is an erofs image.

composefs is not packaged in Debian 12 or 13; the shape is made by hand
from the Debian 13 image (tests/image.py), with sdoverlay installed: its
/usr as an erofs image (mkfs.erofs), mounted file-backed (erofs takes a
regular file as its source since kernel 6.12, as composefs mounts it),
under a read-only overlay mounted on the image's /usr. The container then
sees a /usr whose file system is stacked once already, as on those hosts.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.image import image

_MS_RDONLY = 1
_LIBC = ctypes.CDLL(None, use_errno=True)


def _mount(source: str, target: str, fs_type: str, flags: int = 0, options: str | None = None) -> None:
    # mount(8) would set up a loop device for the image file; composefs
    # hands erofs the file itself.
    if _LIBC.mount(source.encode(), target.encode(), fs_type.encode(), flags,
                   options.encode() if options is not None else None) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"mount {fs_type} {source} on {target}: {os.strerror(error)}")


@contextlib.contextmanager
def composefs_root(directory: Path) -> Iterator[Path]:
    """The image in DIRECTORY with its /usr composefs-shaped; unmounted after."""
    root = image(directory)
    erofs_image, erofs, empty = directory / "usr.erofs", directory / "erofs", directory / "empty"
    completed = subprocess.run(["mkfs.erofs", "--quiet", str(erofs_image), str(root / "usr")],
                               capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"mkfs.erofs failed: {completed.stderr[-1000:]}")
    erofs.mkdir()
    empty.mkdir()
    _mount(str(erofs_image), str(erofs), "erofs", _MS_RDONLY)
    try:
        _mount("composefs", str(root / "usr"), "overlay", _MS_RDONLY, f"lowerdir={erofs}:{empty}")
        try:
            yield root
        finally:
            subprocess.run(["umount", "-l", str(root / "usr")], check=False)
    finally:
        subprocess.run(["umount", "-l", str(erofs)], check=False)
