"""Files inside an overlay's area: its content, upper and work dirs.

These are plain file operations on the tmpfs that systemd mounted; the
mounts themselves are always done by units.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat

from sdoverlay import snapshot, validate
from sdoverlay.errors import OperationFailed
from sdoverlay.spec import OverlaySpec

TYPE_CHECKING = False  # typing is not imported at run time: the content unit starts faster
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

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
            copy = _copy_source(source, layer, spec)
            validate.content(copy, f"the copy of {source}", spec.allow_setuid, spec.allow_world_writable)
            if not spec.keep_ownership:
                _own_by_root(copy.not_root_owned)
            _like_target(layer, target_stat)
        os.rename(partial, content_dir)


def _copy_source(source: str, layer: str, spec: OverlaySpec) -> validate.Scan:
    """SOURCE copied into LAYER, and what the copy holds. Checked on the
    copy, which only root can change, not on SOURCE, which may have changed
    since it was checked. Root's copy reports what it wrote; a user's copy
    (made with the rights of the user who asked, so that it reads nothing
    they could not) is walked again by root: the user's process is not
    trusted."""
    reader = spec.copied_as_uid
    try:
        if reader == 0:
            return snapshot.copy(source, layer, spec.keep_ownership)
        # LAYER is the user's to write, reached from its own working dir:
        # the area above it is root's alone (mode 0700).
        gid, _groups = credentials(reader)
        os.chown(layer, reader, gid)
        as_user(reader, snapshot.copy, source, ".", spec.keep_ownership, cwd=layer)
    except snapshot.CopyFailed as error:
        raise OperationFailed(f"cannot copy {source}: {error}") from None
    return validate.scan(layer)


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
    # Asked with listxattr: a getxattr fails (an exception) for nearly every file.
    capabilities = None
    if stat.S_ISREG(info.st_mode) and validate.CAPABILITY_XATTR in os.listxattr(path):
        capabilities = os.getxattr(path, validate.CAPABILITY_XATTR)
    os.chown(path, 0, 0)
    if info.st_mode & (stat.S_ISUID | stat.S_ISGID):  # the bits chown(2) clears
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


def as_user(uid: int, function: Callable[..., T], *args: Any, cwd: str | None = None) -> T:
    """FUNCTION(*ARGS) run with UID's rights (a forked child that drops to
    them, in CWD if given), its result or exception handed back; root's own
    call runs as it is.

    This is how the service reads a user's SOURCE (issue 8): what the user
    cannot read, it cannot read either, whatever is swapped in meanwhile."""
    if uid == 0:
        return function(*args)
    import pickle  # here: root's copy at boot (sdoverlay.populate) needs none of it

    gid, groups = credentials(uid)
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(reader)
        try:
            if cwd is not None:
                os.chdir(cwd)
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


def remove_empty_area(path: str) -> None:
    """Remove the area's mount point dir once nothing is mounted on it."""
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
