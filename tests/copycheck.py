"""Run inside the test bed by tests/test_snapshot.py: a tree with every kind
of entry and attribute a SOURCE may hold, copied by `cp -a` and by
sdoverlay.snapshot, and each copy described, as JSON on stdout.

    python -m tests.copycheck MODE
MODE: root-keep (keep owners), root (everything root's), user (uid 1000
copies, as content.as_user runs it), special (a FIFO and a socket too).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import struct
import subprocess
import sys

from sdoverlay import content, snapshot, validate

USER = 1000
CAPABILITY = bytes.fromhex("0100000200200000000000000000000000000000")  # cap_net_bind_service
_ACL_ENTRIES = [(1, 6, 0xFFFFFFFF), (2, 4, 1000), (4, 4, 0xFFFFFFFF), (0x10, 4, 0xFFFFFFFF), (0x20, 0, 0xFFFFFFFF)]
ACL = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *entry) for entry in _ACL_ENTRIES)


def _file(root: str, path: str, data: bytes = b"x", mode: int = 0o644) -> str:
    full = os.path.join(root, path)
    with open(full, "wb") as out:
        out.write(data)
    os.chmod(full, mode)
    return full


def _xattr(path: str, name: str, value: bytes) -> None:
    try:
        os.setxattr(path, name, value)
    except OSError:  # user.* on a tmpfs before Linux 6.6: then neither copy has it
        if not name.startswith("user."):
            raise


def make_tree(root: str, special: bool) -> None:
    for path in ("a/b/c", "readonly", "opaque"):
        os.makedirs(os.path.join(root, path))
    _file(root, "a/file", b"hello")
    _file(root, "a/b/c/deep", b"d" * 100_000)
    _file(root, "empty", b"")
    _file(root, "suid", b"s", 0o4755)
    _file(root, "sgid", b"g", 0o2755)
    _xattr(_file(root, "capable", b"c", 0o755), "security.capability", CAPABILITY)
    _xattr(_file(root, "commented"), "user.comment", b"a comment")
    _xattr(_file(root, "trusted"), "trusted.overlay.origin", b"y")
    _xattr(os.path.join(root, "opaque"), "trusted.overlay.opaque", b"y")
    _xattr(_file(root, "acl", b"a", 0o640), "system.posix_acl_access", ACL)
    _xattr(os.path.join(root, "a"), "system.posix_acl_default", ACL)
    _file(root, "world-writable", b"w", 0o666)
    os.chmod(os.path.join(root, "opaque"), 0o1777)
    os.chown(_file(root, "owned", b"o"), 1000, 1001)
    os.chown(_file(root, "group-owned", b"o"), 0, USER)
    os.symlink("a/file", os.path.join(root, "short-link"))
    os.lchown(os.path.join(root, "short-link"), 1000, 1000)
    os.symlink("x" * 200, os.path.join(root, "long-link"))
    os.symlink("é" * 70, os.path.join(root, "long-in-bytes-link"))  # 70 characters, 140 bytes
    os.symlink("/nonexistent", os.path.join(root, "dangling"))
    os.link(os.path.join(root, "a/file"), os.path.join(root, "opaque/hard-link"))
    os.link(os.path.join(root, "a/file"), os.path.join(root, "hard-link"))
    with open(os.path.join(root, "sparse"), "wb") as out:
        out.truncate(1 << 20)
        out.seek(500_000)
        out.write(b"middle")
    with open(os.path.join(root, "sparse-at-both-ends"), "wb") as out:
        out.write(b"start" * 1000)
        out.seek(3 << 20)
        out.write(b"end")
    _file(root, "spaces and\na newline")
    with open(os.path.join(os.fsencode(root), b"not-utf8-\xff"), "wb") as out:
        out.write(b"n")
    os.chmod(os.path.join(root, "readonly"), 0o555)
    os.utime(os.path.join(root, "a"), ns=(1_000_000_123, 2_000_000_456))
    os.utime(os.path.join(root, "a/file"), ns=(3_000_000_789, 4_000_000_012))
    if special:
        os.mkfifo(os.path.join(root, "a/fifo"))
        socket.socket(socket.AF_UNIX).bind(os.path.join(root, "socket"))


def describe(root: str) -> dict[str, list]:
    """Every entry's type and mode, owner, times, blocks, data, link target,
    attributes and which entry it is a hard link of. All stats are taken
    before any data is read (reading changes access times)."""
    stats = {}
    for dir_path, dirs, files in os.walk(root):
        for name in ["", *dirs, *files] if dir_path == root else [*dirs, *files]:
            path = os.path.join(dir_path, name) if name else dir_path
            stats[os.path.relpath(path, root)] = (path, os.lstat(path))
    first_of_inode: dict[int, str] = {}
    described = {}
    for relative, (path, info) in sorted(stats.items()):
        kind = stat.S_IFMT(info.st_mode)
        attributes = {} if kind == stat.S_IFLNK else {
            name: os.getxattr(path, name).hex() for name in sorted(os.listxattr(path))}
        if kind == stat.S_IFREG:
            with open(path, "rb") as data:
                what = hashlib.sha256(data.read()).hexdigest()
        else:
            what = os.readlink(path) if kind == stat.S_IFLNK else ""
        # Blocks: holes kept as holes (both copies are in one tmpfs).
        described[relative] = [
            stat.filemode(info.st_mode), info.st_uid, info.st_gid, info.st_mtime_ns, info.st_atime_ns,
            info.st_blocks if kind == stat.S_IFREG else 0, what, attributes,
            first_of_inode.setdefault(info.st_ino, relative)]
    return described


def main(mode: str) -> None:
    work = "/run/copycheck"
    os.makedirs(work)
    # noatime: reading the source (each copy) or a copy (describe) must not
    # change the access times compared.
    subprocess.run(["mount", "-t", "tmpfs", "-o", "noatime", "tmpfs", work], check=True)
    source, by_cp, by_us = f"{work}/source", f"{work}/cp", f"{work}/ours"
    os.mkdir(source)
    make_tree(source, special=mode == "special")
    os.mkdir(by_cp, 0o700)
    os.mkdir(by_us, 0o700)
    cp = ["cp", "-a", "-T", source, by_cp]
    if mode == "user":
        os.chmod(work, 0o755)
        os.chown(by_cp, USER, USER)
        subprocess.run(["setpriv", f"--reuid={USER}", f"--regid={USER}", "--clear-groups", *cp], check=True)
        os.chown(by_us, USER, USER)
        # As populate runs it: from within the dir, which the user owns.
        found = content.as_user(USER, snapshot.copy, source, ".", False, cwd=by_us)
        for paths in vars(found).values():
            if isinstance(paths, list):
                paths[:] = [by_us + path[1:] for path in paths]
    else:
        subprocess.run(cp, check=True)
        found = snapshot.copy(source, by_us, keep_ownership=mode != "root")
    json.dump({"cp": describe(by_cp), "ours": describe(by_us),
               "found": vars(found), "scanned": vars(validate.scan(by_us))}, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
