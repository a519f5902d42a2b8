"""A snapshot of SOURCE in an overlay's area, copied as `cp -a` copies it,
and what the copy holds, as `validate.scan` would find it.

Why not `cp -a` (which filled areas until issue 9's copy goal): cp makes
about 22 system calls per file (it tries a reflink and copy_file_range,
which fail between two tmpfs, reads the ACL, sets a minimal one, maps a
buffer per file); this makes about 10. 100 MiB in 10,000 files on this
2-core machine: cp -a 415 ms, this copy 244 ms (medians of 7, one run). And
it records what it writes, so that a root's copy need not be walked again
to be checked (validate.scan of the copy cost another 45-68 ms).

What it keeps, as cp -a does: file data (holes kept as holes), modes with setuid/setgid,
owners (or not: KEEP_OWNERSHIP), access and modification times, extended
attributes including ACLs and file capabilities (as far as the writer may
read and set them; cp -a too skips those silently), symlinks as links, hard
links as links. What it does not: device nodes, FIFOs and sockets are
recorded in the result (validate.content refuses them) and never created.
Symlinks' own extended attributes are not copied (only root can set them,
and few systems use them). `persist`, whose copy of an upper dir must keep
overlayfs' whiteouts (character devices), still uses cp -a.
tests/test_snapshot.py compares the two copies of a tree with each kind.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator

from sdoverlay import validate
from sdoverlay.sizes import PAGE

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 30  # sendfile moves at most 0x7ffff000 bytes a call
# What cp -a passes over in silence too: attributes the writer may not set
# or the file system does not keep (user.* on tmpfs before Linux 6.6).
_UNKEPT = {errno.EPERM, errno.EACCES, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENODATA}


class CopyFailed(Exception):
    """What failed, on which path, and why: one line (a plain message, so
    that it crosses content.as_user's pipe)."""


def _failed(action: str, path: str, error: OSError) -> CopyFailed:
    return CopyFailed(f"{action} {path}: {error.strerror or error}")


def copy(source: str, destination: str, keep_ownership: bool) -> validate.Scan:
    """Copy SOURCE to DESTINATION: a dir's entries into DESTINATION (an
    existing dir, which takes the dir's own attributes too), a file or a
    symlink as DESTINATION/basename. Run by root with KEEP_OWNERSHIP false,
    everything written is root's. Run by a user (content.as_user), the
    user's, with the source's group where the user may set it (as cp -a).

    SOURCE is read through open dirs (openat with O_NOFOLLOW, as cp's fts
    does): a dir swapped for a symlink meanwhile is never followed out of it.
    Returns what validate.scan would find in the copy, from what was written
    (paths under DESTINATION). Raises CopyFailed."""
    copier = _Copier(keep_ownership)
    parent, name = os.path.split(source.rstrip("/") or "/")
    parent_fd = _open(parent or "/", _DIR_FLAGS, None, parent or "/")
    try:
        info = _lstat(name or ".", parent_fd, source)
        if stat.S_ISDIR(info.st_mode):
            copier.tree(parent_fd, name or ".", source, destination)
        else:
            copier.entry(parent_fd, name, source, os.path.join(destination, name), info)
    finally:
        os.close(parent_fd)
    copier.finish_dirs()
    return copier.found


class _Copier:
    def __init__(self, keep_ownership: bool) -> None:
        self.found = validate.Scan()
        self.as_root = os.geteuid() == 0
        self.keep_ownership = keep_ownership
        # A hard-linked file's first copy: its path, its stat, the mode and
        # whether file capabilities were written.
        self.links: dict[tuple[int, int], tuple[str, os.stat_result, int, bool]] = {}
        # Dirs are made 0700 first, so that their entries can be written;
        # their own attributes go on last, deepest first (a dir's times
        # change with every entry added).
        self.dirs: list[tuple[str, os.stat_result, dict[str, bytes]]] = []

    def tree(self, parent_fd: int, name: str, source: str, destination: str) -> None:
        """Depth first, entries in name order (as validate.scan walks), with
        one open dir per level."""
        levels = [self._enter(parent_fd, name, source, destination)]
        try:
            while levels:
                fd, source_dir, destination_dir, entries = levels[-1]
                entry = next(entries, None)
                if entry is None:
                    os.close(fd)
                    levels.pop()
                    continue
                entry_source = f"{source_dir}/{entry.name}"
                target = f"{destination_dir}/{entry.name}"
                info = _lstat(entry, fd, entry_source)
                if stat.S_ISDIR(info.st_mode):
                    _make_dir(target)
                    levels.append(self._enter(fd, entry.name, entry_source, target))
                else:
                    self.entry(fd, entry.name, entry_source, target, info)
        finally:  # a failed copy (the burst goes on with other overlays)
            for fd, *_rest in levels:
                os.close(fd)

    def _enter(self, parent_fd: int, name: str, source: str, destination: str
               ) -> tuple[int, str, str, Iterator[os.DirEntry[str]]]:
        """Open dir NAME of PARENT_FD (SOURCE is its path, for messages), note
        its attributes for DESTINATION, list its entries."""
        fd = _open(name, _DIR_FLAGS, parent_fd, source)
        try:
            info = os.fstat(fd)
            xattrs = _read_xattrs(fd)
            with os.scandir(fd) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as error:
            os.close(fd)
            raise _failed("cannot read", source, error) from error
        self.dirs.append((destination, info, xattrs))
        self._note_owner(destination, info)
        if info.st_mode & stat.S_IWOTH:
            self.found.world_writable.append(destination)
        return fd, source, destination, iter(entries)

    def entry(self, dir_fd: int, name: str, source: str, target: str, info: os.stat_result) -> None:
        """Anything but a dir (as listed; a file that is a dir by the time it
        is opened fails in _file): NAME in DIR_FD (SOURCE is its path, for
        messages)."""
        mode = info.st_mode
        if info.st_nlink > 1 and (info.st_dev, info.st_ino) in self.links:
            first, *written = self.links[(info.st_dev, info.st_ino)]
            try:
                os.link(first, target)
            except OSError as error:
                raise _failed("cannot link", target, error) from error
            self._note_file(target, *written, counted=True)
        elif stat.S_ISREG(mode):
            opened, written_mode, capabilities = self._file(dir_fd, name, source, target)
            if info.st_nlink > 1:
                self.links[(info.st_dev, info.st_ino)] = (target, opened, written_mode, capabilities)
            self._note_file(target, opened, written_mode, capabilities, counted=False)
        elif stat.S_ISLNK(mode):
            self._symlink(dir_fd, name, source, target, info)
        else:  # devices, FIFOs, sockets: recorded for validate.content, not made
            self.found.special.append(target)

    def _file(self, dir_fd: int, name: str, source: str, target: str) -> tuple[os.stat_result, int, bool]:
        """Copy one file; the stat of the file read, the mode written and
        whether file capabilities were."""
        reader = _open(name, _READ_FLAGS, dir_fd, source)
        try:
            # The file opened, not the one listed: SOURCE may change meanwhile.
            info = os.fstat(reader)
            if not stat.S_ISREG(info.st_mode):
                raise _failed("cannot copy", source, OSError(errno.EINVAL, "changed while being copied"))
            try:
                writer = os.open(target, _CREATE_FLAGS, 0o600)
            except OSError as error:
                raise _failed("cannot create", target, error) from error
            try:
                _copy_data(reader, writer, info, source, target)
                try:
                    mode = stat.S_IMODE(info.st_mode)
                    if not self._own(writer, info):
                        # Not the owner's file any more: as cp -a, without
                        # the bits that act for the owner or group.
                        mode &= ~(stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX)
                    os.fchmod(writer, mode)
                    # After chown and chmod: chown(2) drops file capabilities.
                    names = _write_xattrs(writer, _read_xattrs(reader))
                    os.utime(writer, ns=(info.st_atime_ns, info.st_mtime_ns))
                except OSError as error:
                    raise _failed("cannot write", target, error) from error
            finally:
                os.close(writer)
        finally:
            os.close(reader)
        return info, mode, validate.CAPABILITY_XATTR in names

    def _symlink(self, dir_fd: int, name: str, source: str, target: str, info: os.stat_result) -> None:
        """The link itself (its extended attributes, which only root can set
        and few systems use, are not copied)."""
        try:
            link = os.readlink(name, dir_fd=dir_fd)
        except OSError as error:
            raise _failed("cannot read", source, error) from error
        try:
            os.symlink(link, target)
            self._own(target, info)
            os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns), follow_symlinks=False)
        except OSError as error:
            raise _failed("cannot write", target, error) from error
        self._note_owner(target, info)
        # tmpfs keeps a target of 128 bytes or more (with its NUL) in a page of its own.
        if len(os.fsencode(link)) + 1 > validate.SHORT_SYMLINK_LEN:
            self.found.bytes_needed += PAGE

    def finish_dirs(self) -> None:
        for target, info, xattrs in reversed(self.dirs):
            try:
                self._own(target, info)
                os.chmod(target, stat.S_IMODE(info.st_mode))
                _write_xattrs(target, xattrs)
                os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))
            except OSError as error:
                raise _failed("cannot write", target, error) from error

    def _own(self, target: int | str, info: os.stat_result) -> bool:
        """Give TARGET the owner a copy keeps; whether it is INFO's. Root
        keeps owners only if asked (what it writes is root's already). A user
        keeps them where it may, else the group where it may (as cp -a)."""
        if self.as_root:
            if self.keep_ownership and (info.st_uid or info.st_gid):
                _chown(target, info.st_uid, info.st_gid)
            return True
        try:
            _chown(target, info.st_uid, info.st_gid)
            return True
        except PermissionError:
            try:
                _chown(target, -1, info.st_gid)
            except PermissionError:
                pass
            return False

    def _owner_of_copy(self, info: os.stat_result) -> tuple[int, int]:
        if self.as_root:
            return (info.st_uid, info.st_gid) if self.keep_ownership else (0, 0)
        return os.geteuid(), info.st_gid

    def _note_owner(self, target: str, info: os.stat_result) -> None:
        if self._owner_of_copy(info) != (0, 0):
            self.found.not_root_owned.append(target)

    def _note_file(self, target: str, info: os.stat_result, mode: int, capabilities: bool, counted: bool) -> None:
        self._note_owner(target, info)
        if mode & stat.S_IWOTH:
            self.found.world_writable.append(target)
        if capabilities or mode & (stat.S_ISUID | stat.S_ISGID):
            self.found.privileged.append(target)
        if not counted:
            self.found.bytes_needed += -(-info.st_size // PAGE) * PAGE


def _open(name: str, flags: int, dir_fd: int | None, source: str) -> int:
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except OSError as error:
        raise _failed("cannot open", source, error) from error


def _lstat(entry: os.DirEntry[str] | str, dir_fd: int, source: str) -> os.stat_result:
    try:
        if isinstance(entry, str):
            return os.stat(entry, dir_fd=dir_fd, follow_symlinks=False)
        return entry.stat(follow_symlinks=False)
    except OSError as error:
        raise _failed("cannot read", source, error) from error


def _chown(target: int | str, uid: int, gid: int) -> None:
    """An open file's owner, or a path's, never what a symlink points to."""
    if isinstance(target, int):
        os.fchown(target, uid, gid)
    else:
        os.lchown(target, uid, gid)


def _make_dir(target: str) -> None:
    try:
        os.mkdir(target, 0o700)
    except OSError as error:
        raise _failed("cannot create", target, error) from error


def _read_xattrs(fd: int) -> dict[str, bytes]:
    """What the reader may read of FD's extended attributes."""
    found = {}
    try:
        names = os.listxattr(fd)
    except OSError as error:
        if error.errno in _UNKEPT:
            return found
        raise
    for name in names:
        try:
            found[name] = os.getxattr(fd, name)
        except OSError as error:
            if error.errno not in _UNKEPT:
                raise
    return found


def _write_xattrs(target: int | str, xattrs: dict[str, bytes]) -> dict[str, bytes]:
    """XATTRS set on TARGET where the writer may; those it set."""
    written = {}
    for name, value in xattrs.items():
        try:
            # A path here is a dir's (made by this copy, never a symlink).
            os.setxattr(target, name, value)
        except OSError as error:
            if error.errno not in _UNKEPT:
                raise
        else:
            written[name] = value
    return written


_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_NO_SPLICE = {errno.EINVAL, errno.ENOSYS}


def _copy_data(reader: int, writer: int, info: os.stat_result, source: str, target: str) -> None:
    """The file's data as it was when opened (a file growing meanwhile is
    copied to its size then), or to the end where the size says nothing
    (/proc). A file with holes keeps them, as cp -a makes it: a sparse
    file of 1 GiB is no GiB of zeros in the area."""
    try:
        # Fewer blocks than the size: holes (cp's test too). Checked this
        # way, a file without holes costs no extra system call.
        if info.st_size and info.st_blocks * 512 < info.st_size and _copy_sparse(reader, writer, info.st_size):
            return
        if _copy_whole(reader, writer, info.st_size):
            return
    except OSError as error:
        raise _copy_error(error, source, target) from error
    # No splice from this file (sendfile said EINVAL): read and write.
    while True:
        try:
            chunk = os.read(reader, 1 << 20)
        except OSError as error:
            raise _failed("error reading", source, error) from error
        if not chunk:
            return
        view = memoryview(chunk)
        try:
            while view:
                view = view[os.write(writer, view):]
        except OSError as error:
            raise _failed("cannot write", target, error) from error


def _copy_whole(reader: int, writer: int, size: int) -> bool:
    """sendfile from the start; False if the file cannot be spliced."""
    copied = 0
    try:
        while True:
            done = os.sendfile(writer, reader, None, size - copied if size else _CHUNK)
            copied += done
            if not done or (size and copied >= size):
                return True
    except OSError as error:
        if copied or error.errno not in _NO_SPLICE:
            raise
        return False


def _copy_sparse(reader: int, writer: int, size: int) -> bool:
    """The data between the holes (SEEK_DATA, SEEK_HOLE) at their offsets,
    the size set last; False (nothing written) if it cannot be spliced."""
    offset = 0
    while offset < size:
        try:
            data = os.lseek(reader, offset, os.SEEK_DATA)
        except OSError as error:
            if error.errno == errno.ENXIO:  # a hole to the end
                break
            raise
        hole = min(os.lseek(reader, data, os.SEEK_HOLE), size)
        os.lseek(writer, data, os.SEEK_SET)
        while data < hole:
            try:
                done = os.sendfile(writer, reader, data, hole - data)
            except OSError as error:
                if offset or error.errno not in _NO_SPLICE:
                    raise
                os.lseek(reader, 0, os.SEEK_SET)
                os.lseek(writer, 0, os.SEEK_SET)
                return False
            if not done:  # shrunk meanwhile
                hole = data
            data += done
        offset = hole
    os.ftruncate(writer, size)
    return True


def _copy_error(error: OSError, source: str, target: str) -> CopyFailed:
    if error.errno in _NO_SPACE:
        return _failed("cannot write", target, error)
    return _failed("error reading", source, error)
