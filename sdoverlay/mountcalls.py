"""mount(2), umount2(2), unshare(2) and the new mount API, via ctypes.

glibc 2.36 wraps all of them; Python 3.11 has none of them (os.unshare
came in 3.12). One place for the calls that change the mount table without
a mount(8) process: the boot burst (sdoverlay.burst), the private view
below an overlay (sdoverlay.changes) and private overlays (sdoverlay.private).
"""

from __future__ import annotations

import os


class Mounter:
    FSOPEN_CLOEXEC = FSMOUNT_CLOEXEC = FSCONFIG_SET_STRING = 1
    FSCONFIG_CMD_CREATE = 6
    MOVE_MOUNT_F_EMPTY_PATH = 0x4
    AT_FDCWD = -100
    CLONE_NEWNS = 0x00020000
    MS_REC = 0x4000
    MS_PRIVATE = 1 << 18
    MNT_DETACH = 2
    MOUNT_ATTR_RDONLY = 0x1
    MS_REMOUNT = 32
    MS_BIND = 4096

    def __init__(self) -> None:
        import ctypes

        self._ctypes = ctypes
        self._libc = ctypes.CDLL(None, use_errno=True)

    def _check(self, result: int, what: str) -> int:
        if result < 0:
            error = self._ctypes.get_errno()
            raise OSError(error, os.strerror(error), what)
        return result

    def detached_tmpfs(self, options: dict[str, str]) -> int:
        """A new tmpfs, mounted nowhere yet: its mount fd."""
        context = self._check(self._libc.fsopen(b"tmpfs", self.FSOPEN_CLOEXEC), "fsopen tmpfs")
        try:
            for key, value in {"source": "tmpfs", **options}.items():
                self._check(self._libc.fsconfig(context, self.FSCONFIG_SET_STRING, key.encode(), value.encode(), 0),
                            f"tmpfs {key}={value}")
            self._check(self._libc.fsconfig(context, self.FSCONFIG_CMD_CREATE, None, None, 0), "tmpfs")
            return self._check(self._libc.fsmount(context, self.FSMOUNT_CLOEXEC, 0), "fsmount tmpfs")
        finally:
            os.close(context)

    def read_only_overlay(self, options: str, where: str) -> None:
        """An overlay on WHERE whose mount is read-only from the moment it is
        attached, over a writable superblock (its upper dir is written
        through a writable copy of the mount, in another mount namespace).
        mount(8) cannot do this: `-o ro` makes the superblock read-only, and
        a later `remount,bind,ro` would come after other namespaces (those
        of ProtectSystem= services) had received the mount writable."""
        context = self._check(self._libc.fsopen(b"overlay", self.FSOPEN_CLOEXEC), "fsopen overlay")
        try:
            for option in options.split(","):
                key, _, value = option.partition("=")
                self._check(self._libc.fsconfig(context, self.FSCONFIG_SET_STRING, key.encode(), value.encode(), 0),
                            f"overlay {option}")
            self._check(self._libc.fsconfig(context, self.FSCONFIG_CMD_CREATE, None, None, 0), "overlay")
            mount_fd = self._check(self._libc.fsmount(context, self.FSMOUNT_CLOEXEC, self.MOUNT_ATTR_RDONLY),
                                   "fsmount overlay")
        finally:
            os.close(context)
        try:
            self.attach(mount_fd, where)
        finally:
            os.close(mount_fd)

    def make_writable(self, where: str) -> None:
        """The mount on WHERE writable, in this mount namespace only (its superblock must be writable)."""
        self._check(self._libc.mount(b"none", where.encode(), None, self.MS_REMOUNT | self.MS_BIND, None),
                    f"remount {where} writable")

    def attach(self, mount_fd: int, where: str) -> None:
        self._check(self._libc.move_mount(mount_fd, b"", self.AT_FDCWD, where.encode(),
                                          self.MOVE_MOUNT_F_EMPTY_PATH), where)

    def mount(self, what: str, where: str, fs_type: str, options: str) -> None:
        self._check(self._libc.mount(what.encode(), where.encode(), fs_type.encode(), 0, options.encode()), where)

    def unmount(self, where: str) -> None:
        self._libc.umount2(where.encode(), 0)

    def private_mount_namespace(self) -> None:
        """This process in a mount namespace of its own, in which nothing it
        unmounts propagates back to the system's (MS_PRIVATE, recursively)."""
        self._check(self._libc.unshare(self.CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        self._check(self._libc.mount(b"none", b"/", None, self.MS_REC | self.MS_PRIVATE, None), "mount --make-rprivate /")

    def detach(self, where: str) -> None:
        """umount -l WHERE: the mount on top of WHERE and everything below it."""
        self._check(self._libc.umount2(where.encode(), self.MNT_DETACH), where)
