"""Drop-in overlays at boot, mounted in one burst (issue 9).

Each overlay has three units (area, content, overlay). Started one by one
at boot they cost 2 mounts and 4 processes each: 20 drop-ins added
+339...+468 ms to boot, and 8 of 19 boots stalled for a second. systemd
(252, and later) rescans /proc/self/mountinfo at most 5 times a second, and
while that rate limit holds it starts no mount job at all, not even one a
condition would skip: every mount job of the boot waits, and
local-fs.target with it. A plain boot uses 4-5 of those rescans already.

So one generated oneshot, sdoverlay-boot.service (after
local-fs-pre.target, when the boot's early mount jobs are done; before
local-fs.target), runs this module's main with the overlays' METADATA
(`python3 -I -S -c ...`: sdoverlay.units.boot_program says why). It creates
each area's tmpfs detached (the new mount API, fsopen and fsmount: no mount
event yet), with its size cap, and fills it there (SOURCE, upper and work
dirs); then it attaches all areas (move_mount) and mounts all overlays
(mount(2)) back to back: one tight run of mount events, not two mount(8)
calls per overlay that each wake systemd. (`sdoverlay list` reads an
area's metadata from its unit's file, here the generated one.)

Each overlay's own units are still generated, and systemd shows them active
as it finds their mounts, but nothing starts them at boot: their jobs, too,
would wait out the rate limit. Nor does the burst's unit name them
(Before=): systemd loads a mount's unit when it sees the mount, and
loading all 60 units of 20 overlays up front, on the way to
local-fs.target, cost 20 ms of boot (issue 9). They carry
After=sdoverlay-boot.service and ConditionPathIsMountPoint=! on what they
mount, so a start by hand never mounts twice, and their areas are not
StopWhenUnneeded= (systemd may see an area before its overlay, and would
unmount it at once). Their Size= caps, their place in `systemctl list-units
'*usroverlay*'` and `sdoverlay list`, and reset, remove and persist are
those of any other overlay.

An overlay the burst cannot mount leaves nothing behind (its area is freed
with its mount fd, or unmounted if the overlay's own mount failed); the
others are mounted, and the unit fails with one line per overlay saying
why. Only overlays of the mount kind go in the burst: one on a path that is
a mount point already (/usr itself) is mounted by its own service, as at
any other time.
"""

from __future__ import annotations

import os
import sys

from sdoverlay.mountcalls import Mounter
from sdoverlay.spec import OverlaySpec, parse_metadata, spec_from_metadata


def _make_layers(spec: OverlaySpec, area_root: str) -> None:
    """The upper and work dirs, AREA_ROOT standing for the area (the upper
    root like TARGET's, and kept where it exists: a persistent upper keeps
    what was done to the merged root)."""
    if spec.read_only:
        return

    def placed(path: str) -> str:
        return area_root + path[len(spec.area):] if path.startswith(spec.area + "/") else path
    upper, work = placed(spec.upper_dir), placed(spec.work_dir)
    if spec.persistent:
        os.makedirs(spec.persistent_dir, mode=0o700, exist_ok=True)
    if not os.path.isdir(upper):
        target = os.stat(spec.target)
        os.mkdir(upper)
        os.chown(upper, target.st_uid, target.st_gid)
        os.chmod(upper, target.st_mode & 0o7777)
    os.makedirs(work, mode=0o700, exist_ok=True)


def main(argv: list[str]) -> int:
    specs = [spec_from_metadata(parse_metadata(metadata)) for metadata in argv]
    if not specs or None in specs:
        print("usage: python3 -m sdoverlay.burst x-sdoverlay.name=...,x-sdoverlay.target=... ...", file=sys.stderr)
        return 2
    mounter = Mounter()
    problems: dict[str, str] = {}
    detached: dict[str, int] = {}
    # Run again (systemctl restart), what is up already stays as it is.
    todo = [spec for spec in specs if not (os.path.ismount(spec.area) and os.path.ismount(spec.target))]
    for spec in todo:  # each area made and filled, still detached
        taken = [path for path in (spec.area, spec.target) if os.path.ismount(path)]
        if taken:
            problems[spec.name] = f"{taken[0]} is a mount point already"
            continue
        try:
            detached[spec.name] = mounter.detached_tmpfs({"size": spec.size, "mode": "0700"})
            # This process's path to it (a child copying as a user enters it
            # before it drops its rights).
            root = f"/proc/{os.getpid()}/fd/{detached[spec.name]}"
            if spec.source is not None:
                from sdoverlay import content

                content.populate(spec, content_dir=root + spec.content_dir[len(spec.area):])
            _make_layers(spec, root)
            os.makedirs(spec.area, mode=0o755, exist_ok=True)
        except Exception as error:  # noqa: BLE001 - reported below; the others go on
            problems[spec.name] = f"cannot prepare its area: {getattr(error, 'message', None) or error}"
    attached = []
    for spec in todo:  # all areas attached, back to back
        if spec.name in detached and spec.name not in problems:
            try:
                mounter.attach(detached[spec.name], spec.area)
                attached.append(spec)
            except OSError as error:
                problems[spec.name] = f"cannot mount its area: {error.strerror}"
        if spec.name in detached:
            os.close(detached[spec.name])  # an area never attached goes with it
    for spec in attached:  # all overlays, back to back
        try:
            mounter.mount("overlay", spec.target, "overlay", spec.overlay_options)
        except OSError as error:
            problems[spec.name] = f"cannot mount it on {spec.target}: {error.strerror}"
            mounter.unmount(spec.area)
    for spec in todo:
        if spec.name in problems:
            # Nothing of it is left; its units are not started (they would
            # only fail the same way): this unit fails, and says why.
            if spec.name in detached:
                _remove_dir(spec.area)
            print(f"overlay {spec.name}: {problems[spec.name]}", file=sys.stderr, flush=True)
    print(f"mounted {len(todo) - len(problems)} of {len(todo)} overlays", flush=True)
    return 1 if problems else 0


def _remove_dir(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass  # not there, or something is in it: not ours to remove


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
