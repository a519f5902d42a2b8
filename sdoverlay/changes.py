"""What an overlay changed against what its TARGET shows without it (issue 10).

The overlay's layers are read as overlayfs merges them
(Documentation/filesystems/overlayfs.rst): its upper dir on top, then the
content of an applied SOURCE, then TARGET as it was. A whiteout (a 0:0
character device or, on newer kernels, an empty file with
trusted.overlay.whiteout) hides what is below it; an opaque dir
(trusted.overlay.opaque=y) hides the dirs below it; a non-dir hides
everything below it. Each path of the merged view is compared with the
original:

- added: not in the original;
- deleted: a whiteout over something of the original (a deleted dir is one
  entry, not one per file in it);
- replaced: of another type than the original's, or an opaque dir over an
  original dir (its old entries are gone; what is in it now is added);
- modified: same type, other content (bytes, symlink target, device),
  mode, owner or xattrs (overlayfs' own trusted.overlay.* not counted).

A rename is a deletion and an addition: sdoverlay mounts with
redirect_dir=off (sdoverlay.spec), so overlayfs records no renames.

`python3 -m sdoverlay.changes METADATA` prints an overlay's changes as JSON:
sdoverlay's service runs it (as root: whiteouts and opaque dirs are marked
with trusted.* xattrs) in a mount namespace of its own, where it unmounts
the overlay to see the original below it; nothing of that reaches the
system's mount table.
"""

from __future__ import annotations

import os
import stat
import sys

from sdoverlay.record import record

TYPE_CHECKING = False  # see sdoverlay.record
if TYPE_CHECKING:
    from typing import Any

ADDED, MODIFIED, DELETED, REPLACED = "added", "modified", "deleted", "replaced"
# git status --short's letters.
LETTERS = {ADDED: "A", MODIFIED: "M", DELETED: "D", REPLACED: "R"}

_OVERLAY_XATTRS = "trusted.overlay."
_WHITEOUT_XATTR = "trusted.overlay.whiteout"
_OPAQUE_XATTR = "trusted.overlay.opaque"
_CHUNK = 1 << 20

_TYPES = ((stat.S_ISREG, "file"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "symlink"), (stat.S_ISFIFO, "fifo"),
          (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "char-device"), (stat.S_ISBLK, "block-device"))


@record
class Change:
    path: str  # absolute, under TARGET
    change: str  # ADDED, MODIFIED, DELETED, REPLACED
    type: str  # what is there now (deleted: what was there)
    previous_type: str = ""  # replaced: what was there before
    what: tuple = ()  # modified: of "content", "mode", "owner", "xattrs"
    size: int = 0  # a regular file's bytes now (0 for the rest, and for deleted)

    def to_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {"path": self.path, "change": self.change, "type": self.type}
        if self.change == REPLACED:
            found["previous_type"] = self.previous_type
        if self.change == MODIFIED:
            found["modified"] = list(self.what)
        if self.change != DELETED:
            found["size"] = self.size
        return found


def change_from_json(found: dict[str, Any]) -> Change:
    return Change(path=found["path"], change=found["change"], type=found["type"],
                  previous_type=found.get("previous_type", ""), what=tuple(found.get("modified", ())),
                  size=found.get("size", 0))


def file_type(mode: int) -> str:
    return next(name for test, name in _TYPES if test(mode))


def _xattrs(path: str) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}  # a filesystem without xattrs, or a symlink where they are not supported
    return {name: os.getxattr(path, name, follow_symlinks=False) for name in names
            if not name.startswith(_OVERLAY_XATTRS)}


def _has_xattr(path: str, name: str, value: bytes | None = None) -> bool:
    try:
        found = os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return False
    return value is None or found == value


def is_whiteout(path: str, info: os.stat_result) -> bool:
    if stat.S_ISCHR(info.st_mode):
        return info.st_rdev == 0
    return stat.S_ISREG(info.st_mode) and info.st_size == 0 and _has_xattr(path, _WHITEOUT_XATTR)


def is_opaque(path: str) -> bool:
    return _has_xattr(path, _OPAQUE_XATTR, b"y")


def _same_bytes(a: str, b: str) -> bool:
    with open(a, "rb") as first, open(b, "rb") as second:
        while True:
            chunk = first.read(_CHUNK)
            if chunk != second.read(_CHUNK):
                return False
            if not chunk:
                return True


def _differences(path: str, info: os.stat_result, original: str, before: os.stat_result) -> tuple[str, ...]:
    """What differs between two entries of the same type."""
    what = []
    mode = info.st_mode
    if stat.S_ISREG(mode):
        if info.st_size != before.st_size or not _same_bytes(path, original):
            what.append("content")
    elif stat.S_ISLNK(mode):
        if os.readlink(path) != os.readlink(original):
            what.append("content")
    elif (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)) and info.st_rdev != before.st_rdev:
        what.append("content")
    if not stat.S_ISLNK(mode) and stat.S_IMODE(mode) != stat.S_IMODE(before.st_mode):
        what.append("mode")
    if (info.st_uid, info.st_gid) != (before.st_uid, before.st_gid):
        what.append("owner")
    if _xattrs(path) != _xattrs(original):
        what.append("xattrs")
    return tuple(what)


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def compute(layers: list[str], original: str, target: str) -> list[Change]:
    """The changes of the merged LAYERS (top first) against the tree ORIGINAL,
    as paths under TARGET, sorted by path."""
    changes: list[Change] = []
    top_layers = []
    for layer in layers:
        top_layers.append(layer)
        if is_opaque(layer):
            break
    _walk("", top_layers, original, True, target, changes)
    return changes


def _walk(relative: str, layers: list[str], original: str, shows_original: bool, target: str,
          changes: list[Change]) -> None:
    """Compare the entries of dir RELATIVE, a dir in each of LAYERS, with
    those of the same dir in ORIGINAL, if that shows through here."""
    names: set[str] = set()
    for layer in layers:
        names.update(os.listdir(os.path.join(layer, relative)))
    for name in sorted(names):
        child = os.path.join(relative, name) if relative else name
        path = os.path.join(target, child)
        top = None  # (path in its layer, stat) of what the merged view shows; None: a whiteout
        child_layers: list[str] = []  # the layers whose dirs merge at CHILD
        opaque = False
        for layer in layers:
            in_layer = os.path.join(layer, child)
            info = _lstat(in_layer)
            if info is None:
                continue
            if top is None and not child_layers:
                if is_whiteout(in_layer, info):
                    break
                top = (in_layer, info)
            if not stat.S_ISDIR(info.st_mode) or not stat.S_ISDIR(top[1].st_mode):
                break  # a non-dir hides everything below it, and a dir hides a non-dir
            child_layers.append(layer)
            if is_opaque(in_layer):
                opaque = True
                break
        before_path = os.path.join(original, child)
        before = _lstat(before_path) if shows_original else None
        if top is None:
            if before is not None:
                changes.append(Change(path, DELETED, file_type(before.st_mode)))
            continue
        in_layer, info = top
        kind = file_type(info.st_mode)
        size = info.st_size if kind == "file" else 0
        merged_with_original = False
        if before is None:
            changes.append(Change(path, ADDED, kind, size=size))
        elif file_type(before.st_mode) != kind or (kind == "dir" and opaque):
            changes.append(Change(path, REPLACED, kind, previous_type=file_type(before.st_mode), size=size))
        else:
            what = _differences(in_layer, info, before_path, before)
            if what:
                changes.append(Change(path, MODIFIED, kind, what=what, size=size))
            merged_with_original = True
        if kind == "dir":
            _walk(child, child_layers, original, merged_with_original, target, changes)


def overlay_layers(spec: Any) -> list[str]:
    """The overlay's own layers, top first: its upper dir, then the SOURCEs' content."""
    layers = ([] if spec.read_only else [spec.upper_dir]) + spec.content_layers()
    return [layer for layer in layers if os.path.isdir(layer)]


def main(argv: list[str]) -> int:
    import json

    from sdoverlay import mountinfo
    from sdoverlay.mountcalls import Mounter
    from sdoverlay.spec import spec_from_argument
    from sdoverlay.status import our_overlay_mount

    spec = spec_from_argument(argv, "sdoverlay.changes")
    if spec is None:
        return 2
    try:
        mounter = Mounter()
        mounter.private_mount_namespace()
        # Whatever is stacked on the overlay goes with it; below it is the
        # original. Everything this process needs is imported by now: TARGET
        # may be the /usr it runs from.
        while our_overlay_mount(spec, mountinfo.read()) is not None:
            mounter.detach(spec.target)
        changes = compute(overlay_layers(spec), spec.target, spec.target)
    except OSError as error:
        print(f"cannot compare overlay {spec.name} with {spec.target}: {error.filename or ''}: {error.strerror}",
              file=sys.stderr)
        return 1
    json.dump([change.to_json() for change in changes], sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
