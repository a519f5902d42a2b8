"""Private overlays: writable for `sdoverlay run NAME -- COMMAND`, read-only
for every other process (issue 10; `ostree admin unlock --transient`,
bootc#2034).

    python3 -m sdoverlay.private mount METADATA
        ExecStart= of a private overlay's service: the overlay on TARGET,
        its mount read-only from the moment it appears (Mounter.read_only_overlay),
        so that every mount namespace receives it read-only, those of
        ProtectSystem= services included; its superblock stays writable.
    python3 -m sdoverlay.private run REQUEST_FILE
        ExecStart= of the transient unit sdoverlay's service starts for
        `sdoverlay run`: in a mount namespace of its own, the overlay's mount
        made writable there only; then, as the caller (uid, groups, working
        dir, environment from REQUEST_FILE, which only root can read and
        which is deleted at once), exec COMMAND with the caller's
        stdin/stdout/stderr. What COMMAND writes goes to the overlay's upper
        dir: every other process sees it, read-only, as it is written.
"""

from __future__ import annotations

import json
import os
import sys

# COMMAND could not be started (not found, not executable, no such working dir), as in sh.
CANNOT_RUN = 127


def _mount(argv: list[str]) -> int:
    from sdoverlay.mountcalls import Mounter
    from sdoverlay.spec import spec_from_argument

    spec = spec_from_argument(argv, "sdoverlay.private mount")
    if spec is None:
        return 2
    try:
        Mounter().read_only_overlay(spec.overlay_options, spec.target)
    except OSError as error:
        print(f"cannot mount overlay {spec.name} on {spec.target}: {error.strerror}", file=sys.stderr)
        return 1
    return 0


def _run(request_file: str) -> int:
    from sdoverlay.mountcalls import Mounter

    with open(request_file, encoding="utf-8") as file:
        request = json.load(file)
    os.unlink(request_file)
    try:
        mounter = Mounter()
        mounter.private_mount_namespace()
        mounter.make_writable(request["target"])
    except OSError as error:
        print(f"sdoverlay run: cannot make {request['target']} writable: {error.strerror}", file=sys.stderr)
        return 1
    uid, gid, groups = request["uid"], request["gid"], request["groups"]
    if uid != 0:
        os.setgroups(groups)
        os.setgid(gid)
        os.setuid(uid)
    argv = request["argv"]
    try:
        os.chdir(request["cwd"])
    except OSError as error:
        print(f"sdoverlay run: cannot change to {request['cwd']}: {error.strerror}", file=sys.stderr)
        return CANNOT_RUN
    try:
        os.execvpe(argv[0], argv, request["environment"])
    except OSError as error:
        print(f"sdoverlay run: cannot run {argv[0]}: {error.strerror}", file=sys.stderr)
        return CANNOT_RUN


def main(argv: list[str]) -> int:
    if argv[:1] == ["mount"]:
        return _mount(argv[1:])
    if len(argv) == 2 and argv[0] == "run":
        return _run(argv[1])
    print("usage: python3 -m sdoverlay.private mount METADATA | run REQUEST_FILE", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
