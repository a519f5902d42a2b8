"""`sdoverlay export NAME DEST`: an overlay's changes as a system extension (issue 10).

DEST becomes a directory that `systemd-sysext merge` takes as it is (put it
in /var/lib/extensions, or link it there): the changed paths under
DEST/usr/... (or DEST/opt/...), and
DEST/usr/lib/extension-release.d/extension-release.EXT, where EXT is DEST's
base name, as systemd-sysext requires of a directory extension
(man:systemd-sysext(8), "Extension release identification").

What changed comes from the service's diff (sdoverlay.changes); the files
are copied from TARGET as it shows them now, by the calling user's own
process: nothing is read with more rights than the caller has, and DEST is
written with the caller's. As root, owners are kept; as another user, the
copies are that user's.

An extension can add and replace files, never delete one: systemd-sysext
stacks extensions as lower layers of an overlay on /usr, and a lower layer's
whiteout is not honoured for the host's tree. So deletions (and dirs
replaced whole, whose old entries are deleted too) are refused with the
list, unless --ignore-deletions leaves them out knowingly.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from typing import Any

from sdoverlay import changes, paths
from sdoverlay.changes import Change
from sdoverlay.errors import Conflict, InvalidInput, OperationFailed

# systemd-sysext's default hierarchies (SYSTEMD_SYSEXT_HIERARCHIES).
HIERARCHIES = ("/usr", "/opt")
RELEASE_DIR = "usr/lib/extension-release.d"
OS_RELEASE = ("/etc/os-release", "/usr/lib/os-release")
# uname -m -> systemd's architecture names (src/basic/architecture.c).
ARCHITECTURES = {"x86_64": "x86-64", "i686": "x86", "i586": "x86", "aarch64": "arm64", "armv7l": "arm",
                 "ppc64le": "ppc64-le", "ppc64": "ppc64", "s390x": "s390x", "riscv64": "riscv64",
                 "loongarch64": "loongarch64"}
COPIED_TYPES = ("file", "dir", "symlink")
FORMATS = ("directory", "raw")
# What `systemd-repart --make-ddi=sysext` builds from (systemd 255 and newer).
SYSEXT_DEFINITIONS = "/usr/lib/systemd/repart/definitions/sysext.repart.d"
RAW_SINCE_SYSTEMD = 255
EXTENSION_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
# os-release(5), VERSION_ID= (and so SYSEXT_VERSION_ID=): "a lower-case
# string (mostly numeric, no spaces or other characters outside of 0-9, a-z,
# '.', '_' and '-')". Not '.' or '..', which systemd's version_is_valid()
# refuses as file names.
VERSION = re.compile(r"[0-9a-z._-]{1,255}")


def check_version(version: str | None) -> None:
    """--version as os-release(5) allows it: it is written into the
    extension-release file, where a newline would add a line of its own."""
    if version is not None and (not VERSION.fullmatch(version) or version in (".", "..")):
        raise InvalidInput(f"invalid --version {version!r}: use 1-255 characters of 0-9 a-z . _ - "
                           "(os-release(5), VERSION_ID=)")


def check_target(name: str, target: str) -> None:
    if not any(paths.is_within(target, hierarchy) for hierarchy in HIERARCHIES):
        raise InvalidInput(f"cannot export overlay {name!r}: its target {target} is not under "
                           f"{' or '.join(HIERARCHIES)}, the trees a system extension can carry")


def extension_name(destination: str, image_format: str = "directory") -> str:
    """DEST's base name, which names the extension (systemd-sysext's image
    names); a raw image's without its .raw."""
    base = os.path.basename(os.path.normpath(destination))
    if image_format == "raw":
        if not base.endswith(".raw"):
            raise InvalidInput(f"cannot export to {destination}: a raw image's name ends in .raw")
        base = base[:-len(".raw")]
    if not EXTENSION_NAME.fullmatch(base):
        raise InvalidInput(f"cannot export to {destination}: its base name names the extension: "
                           "1-64 characters of A-Z a-z 0-9 _ - ., not starting with '-' or '.'")
    return base


def _os_release() -> dict[str, str]:
    for path in OS_RELEASE:
        try:
            with open(path, encoding="utf-8") as file:
                text = file.read()
        except FileNotFoundError:
            continue
        found = {}
        for line in text.splitlines():
            key, equals, value = line.strip().partition("=")
            if equals and not key.startswith("#"):
                found[key] = value.strip().strip("\"'")
        return found
    return {}


def release_text(version: str | None) -> str:
    """extension-release for this host, as systemd-sysext matches it: the
    host's ID (or _any), its SYSEXT_LEVEL and VERSION_ID, this machine's
    architecture; VERSION the extension's own (SYSEXT_VERSION_ID=)."""
    host = _os_release()
    lines = [f"ID={host.get('ID') or '_any'}"]
    for key in ("SYSEXT_LEVEL", "VERSION_ID"):
        if host.get(key) and host.get("ID"):
            lines.append(f"{key}={host[key]}")
    architecture = ARCHITECTURES.get(os.uname().machine)
    if architecture:
        lines.append(f"ARCHITECTURE={architecture}")
    if version is not None:
        lines.append(f"SYSEXT_VERSION_ID={version}")
    return "\n".join(lines) + "\n"


def deletions(found: list[Change]) -> list[str]:
    """What an extension cannot carry: deleted paths and dirs replaced whole."""
    return [change.path for change in found if change.change == changes.DELETED
            or (change.change == changes.REPLACED and change.previous_type == "dir" and change.type == "dir")]


def _copy_attributes(source: str, info: os.stat_result, copy: str) -> None:
    if os.geteuid() == 0:
        os.chown(copy, info.st_uid, info.st_gid, follow_symlinks=False)
    if not stat.S_ISLNK(info.st_mode):
        os.chmod(copy, stat.S_IMODE(info.st_mode))
        os.utime(copy, ns=(info.st_atime_ns, info.st_mtime_ns))
    try:
        for key in os.listxattr(source, follow_symlinks=False):
            os.setxattr(copy, key, os.getxattr(source, key, follow_symlinks=False), follow_symlinks=False)
    except OSError:
        pass  # xattrs a user may not copy (security.*, trusted.*) or a filesystem without them


def _ensure_parents(path: str, destination: str) -> None:
    """DEST + PATH's parent dirs, each like the dir it stands for."""
    parts = [part for part in path.split("/") if part][:-1]
    for depth in range(1, len(parts) + 1):
        original = "/" + "/".join(parts[:depth])
        copy = destination + original
        if not os.path.isdir(copy):
            os.mkdir(copy)
            _copy_attributes(original, os.stat(original), copy)


def _copy(change: Change, destination: str) -> None:
    source, copy = change.path, destination + change.path
    _ensure_parents(change.path, destination)
    info = os.lstat(source)
    if stat.S_ISDIR(info.st_mode):
        if not os.path.isdir(copy):
            os.mkdir(copy)
    elif stat.S_ISLNK(info.st_mode):
        os.symlink(os.readlink(source), copy)
    elif stat.S_ISREG(info.st_mode):
        shutil.copyfile(source, copy, follow_symlinks=False)
    else:
        raise OperationFailed(f"cannot export {source}: a {changes.file_type(info.st_mode)} changed type meanwhile")
    _copy_attributes(source, info, copy)


def _missing_dirs(path: str) -> list[str]:
    """PATH and those of its parents that do not exist, outermost first."""
    missing = []
    while not os.path.lexists(path):
        missing.insert(0, path)
        path = os.path.dirname(path)
    return missing


def check_raw_possible() -> str:
    """The systemd-repart that builds raw images here, or why there is none."""
    import subprocess

    repart = shutil.which("systemd-repart")
    if repart is None:
        raise InvalidInput("cannot build a raw image here: systemd-repart is not installed (it builds them since "
                           f"systemd {RAW_SINCE_SYSTEMD}); use --format=directory")
    first = subprocess.run([repart, "--version"], capture_output=True, text=True, check=False).stdout.split()
    version = int(first[1]) if len(first) > 1 and first[1].isdigit() else 0
    if version < RAW_SINCE_SYSTEMD or not os.path.isdir(SYSEXT_DEFINITIONS):
        raise InvalidInput(f"cannot build a raw image here: systemd-repart {version or '(unknown version)'} cannot "
                           f"make system extension images (systemd {RAW_SINCE_SYSTEMD} or newer can); "
                           "use --format=directory")
    return repart


def _build_raw(repart: str, tree: str, image: str) -> None:
    """IMAGE, a DDI of TREE, as `systemd-repart --make-ddi=sysext` makes it
    (its definitions: an erofs root partition and its verity hashes), but
    without the verity signature partition, which needs a signing key
    (--make-ddi=sysext refuses without one, and takes no --definitions=):
    systemd-sysext's default image policy accepts unsigned verity."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix=".sdoverlay-repart.") as definitions:
        for entry in sorted(os.listdir(SYSEXT_DEFINITIONS)):
            with open(os.path.join(SYSEXT_DEFINITIONS, entry), encoding="utf-8") as file:
                text = file.read()
            if "Verity=signature" not in text:
                with open(os.path.join(definitions, entry), "w", encoding="utf-8") as copy:
                    copy.write(text)
        completed = subprocess.run(
            [repart, "--empty=create", "--size=auto", "--offline=yes", "--dry-run=no", "--no-pager",
             f"--definitions={definitions}", f"--copy-source={tree}", image],
            capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        lines = [line for line in completed.stderr.splitlines() if line.strip()]
        raise OperationFailed(f"systemd-repart could not build {image}: {lines[-1] if lines else 'failed'}")


def export(name: str, target: str, found: list[Change], destination: str, version: str | None,
           ignore_deletions: bool, image_format: str = "directory") -> dict[str, Any]:
    """Write the extension to DESTINATION (which must not exist); on any
    failure nothing of it is left."""
    check_version(version)
    check_target(name, target)
    extension = extension_name(destination, image_format)
    repart = check_raw_possible() if image_format == "raw" else None
    if os.path.lexists(destination):
        raise Conflict(f"cannot export to {destination}: it exists already")
    cannot = deletions(found)
    if cannot and not ignore_deletions:
        raise InvalidInput(f"cannot export overlay {name!r}: an extension cannot delete, and it deleted "
                           f"{len(cannot)} path(s): {' '.join(cannot)} (--ignore-deletions to export without them)")
    unsupported = [f"{change.path} ({change.type})" for change in found
                   if change.change != changes.DELETED and change.type not in COPIED_TYPES]
    if unsupported:
        raise InvalidInput(f"cannot export overlay {name!r}: only files, dirs and symlinks are exported, not "
                           + ", ".join(unsupported))
    copied = [change for change in found if change.change != changes.DELETED]
    # DEST and the parents it lacks (/var/lib/extensions may not exist yet),
    # outermost first. A raw image's tree is made beside it, and removed
    # once the image is built.
    parents = _missing_dirs(os.path.abspath(destination))[:-1]
    tree = (os.path.join(os.path.dirname(os.path.abspath(destination)), f".{extension}.sdoverlay-tree")
            if repart else destination)
    try:
        for path in parents:
            os.mkdir(path, 0o755)
        if os.path.lexists(tree):  # a killed export's
            shutil.rmtree(tree)
        os.mkdir(tree, 0o755)
        for change in copied:
            _copy(change, tree)
        release = os.path.join(tree, RELEASE_DIR, f"extension-release.{extension}")
        os.makedirs(os.path.dirname(release), mode=0o755, exist_ok=True)
        with open(release, "w", encoding="utf-8") as file:
            file.write(release_text(version))
        if repart:
            _build_raw(repart, tree, destination)
            shutil.rmtree(tree)
            release = f"{destination}:/{RELEASE_DIR}/extension-release.{extension}"
    except BaseException as raised:
        shutil.rmtree(tree, ignore_errors=True)
        if repart and os.path.lexists(destination):
            os.unlink(destination)
        if parents:
            shutil.rmtree(parents[0], ignore_errors=True)
        if isinstance(raised, OSError):
            raise OperationFailed(f"cannot export overlay {name!r} to {destination}: "
                                  f"{raised.filename or ''}: {raised.strerror}") from raised
        raise
    return {"name": name, "target": target, "destination": os.path.abspath(destination), "format": image_format,
            "extension": extension, "release_file": release, "paths": len(copied),
            "bytes": sum(change.size for change in copied), "ignored_deletions": cannot}
