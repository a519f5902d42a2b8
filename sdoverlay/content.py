"""Files inside an overlay's area: its content, upper and work dirs.

These are plain file operations on the tmpfs that systemd mounted; the
mounts themselves are always done by units.
"""

from __future__ import annotations

import os
import pickle
import pwd
import shutil
import stat
import subprocess
from collections.abc import Callable
from typing import Any, TypeVar

from sdoverlay import validate
from sdoverlay.errors import OperationFailed
from sdoverlay.spec import OverlaySpec

T = TypeVar("T")


def _like_target(path: str, target_stat: os.stat_result) -> None:
    # The merged root of an overlay takes its owner and mode from the
    # topmost layer's root dir: the content and upper roots must look like
    # TARGET, or applying an overlay would change TARGET's own permissions.
    os.chown(path, target_stat.st_uid, target_stat.st_gid)
    os.chmod(path, target_stat.st_mode & 0o7777)


def populate(spec: OverlaySpec, content_dir: str | None = None) -> None:
    """Copy SOURCE into SPEC's area, unless done already: checked, owned by
    root, its root dir like TARGET's. Run by the overlay's content unit, at
    apply, at boot (an overlay not in the boot burst) and again after a
    reset (which keeps the content); the unit's other commands make the
    upper and work dirs. And by the boot burst (sdoverlay.burst), with
    CONTENT_DIR the content dir's path in an area not attached yet."""
    content_dir = content_dir or spec.content_dir
    target_stat = os.stat(spec.target)
    if spec.source is not None and not os.path.isdir(content_dir):
        # Copied beside, renamed into place when complete: a content dir that
        # exists is always whole.
        partial = content_dir + ".partial"
        if os.path.lexists(partial):
            shutil.rmtree(partial)
        os.mkdir(partial, 0o700)
        # content_layers is top first; the SOURCEs are in the order given.
        for source, layer in zip(spec.sources, reversed(spec.content_layers(partial))):
            if layer != partial:
                os.mkdir(layer, 0o700)
            copy_in(source, layer, as_uid=spec.owner_uid)
            # Checked again on the copy, which only root can change: SOURCE may
            # have changed since it was checked (and a FIFO is copied, not read).
            copy = validate.scan(layer)
            validate.content(copy, f"the copy of {source}", spec.allow_setuid, spec.allow_world_writable)
            if not spec.keep_ownership:
                _own_by_root(copy.not_root_owned)
            _like_target(layer, target_stat)
        os.rename(partial, content_dir)


def remove_writable_layers(spec: OverlaySpec) -> None:
    """Drop the upper and work dirs (a reset); the content unit makes new ones.

    New dirs rather than emptied ones: after a lazy unmount the detached
    overlay may still hold the old ones, and overlayfs warns about (and with
    index=on refuses) an upper or work dir in use by another mount.
    """
    for path in (spec.upper_dir, spec.work_dir):
        if os.path.lexists(path):
            shutil.rmtree(path)


def _own_by_root(paths: list[str]) -> None:
    """chown root:root of PATHS (what the scan of the copy found owned by
    someone else: a second walk of 10,000 files cost 80 ms, issue 9),
    keeping setuid/setgid bits and file capabilities, which chown(2) clears
    (Linux treats root like any user there)."""
    for path in paths:
        _own_path_by_root(path)


def _own_path_by_root(path: str) -> None:
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        os.lchown(path, 0, 0)
        return
    try:
        capabilities = os.getxattr(path, validate.CAPABILITY_XATTR)
    except OSError:
        capabilities = None
    os.chown(path, 0, 0)
    os.chmod(path, stat.S_IMODE(info.st_mode))
    if capabilities is not None:
        os.setxattr(path, validate.CAPABILITY_XATTR, capabilities)


def credentials(uid: int) -> tuple[int, list[int]]:
    """UID's primary group and groups, as a login would have them."""
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return uid, []
    return entry.pw_gid, os.getgrouplist(entry.pw_name, entry.pw_gid)


def as_user(uid: int, function: Callable[..., T], *args: Any) -> T:
    """FUNCTION(*ARGS) run with UID's rights (a forked child that drops to
    them), its result or exception handed back; root's own call runs as it is.

    This is how the service reads a user's SOURCE (issue 8): what the user
    cannot read, it cannot read either, whatever is swapped in meanwhile."""
    if uid == 0:
        return function(*args)
    gid, groups = credentials(uid)
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(reader)
        try:
            os.setgroups(groups)
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            outcome: tuple[bool, Any] = (True, function(*args))
        except BaseException as error:  # noqa: BLE001 - handed to the parent
            outcome = (False, error)
        try:
            with os.fdopen(writer, "wb") as pipe:
                pickle.dump(outcome, pipe)
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    if not data:
        raise OperationFailed(f"cannot check as uid {uid}: the checking process died")
    ok, value = pickle.loads(data)
    if not ok:
        raise value
    return value


def copy_in(source: str, content_dir: str, as_uid: int = 0) -> None:
    """Snapshot SOURCE with cp -a: a file lands as content/basename, a dir's
    entries in content/. cp -a also keeps what an upper dir means to
    overlayfs (whiteouts are 0:0 character devices, opaque dirs
    trusted.overlay.* xattrs), which `persist` relies on.

    AS_UID: cp runs with that user's rights (an overlay's owner other than
    root), so that it reads nothing the owner could not: CONTENT_DIR is
    handed to the user first, and cp writes to it relative to its working
    dir, as the area above it is root's alone (mode 0700)."""
    destination = "." if as_uid else content_dir
    if os.path.isdir(source):
        command = ["cp", "-a", "-T", "--", source, destination]
    else:
        command = ["cp", "-a", "--", source, os.path.join(destination, os.path.basename(source))]
    drop: dict[str, Any] = {}
    if as_uid:
        gid, groups = credentials(as_uid)
        os.chown(content_dir, as_uid, gid)
        drop = {"cwd": content_dir, "user": as_uid, "group": gid, "extra_groups": groups}
    completed = subprocess.run(command, capture_output=True, text=True, check=False, **drop)
    if completed.returncode != 0:
        reason = completed.stderr.strip().splitlines()
        raise OperationFailed(f"cannot copy {source}: {reason[0] if reason else 'cp failed'}")


def remove_empty_area(path: str) -> None:
    """Remove the area's mount point dir once nothing is mounted on it."""
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
