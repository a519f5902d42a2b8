"""Drop-in overlays at boot, mounted in one burst (issue 9).

Each overlay has three units (area, content, overlay), and started one by
one at boot they cost 2 mounts and 4 processes each: 20 drop-ins added
+339...+468 ms to boot, and their 40 mounts ran into systemd's mountinfo
rate limit (5 rescans a second), stalling an unrelated mount for about a
second in 8 of 19 boots. Mounts made together cost one rescan, not one
each. So one generated oneshot, sdoverlay-boot.service, mounts every area
with one `mount --all`, makes the upper and work dirs with one `install`
per owner and mode, fills the areas that have a SOURCE with one Python,
and mounts every overlay with a second `mount --all`.

Each overlay's own units are still generated, wanted by local-fs.target
and ordered after the burst, with ConditionPathIsMountPoint=! on what they
would mount: after a successful burst they are skipped without a process,
and systemd shows them active as it finds their mounts; for an overlay the
burst could not mount, its own units do what is missing, or fail with
systemd's own reason (and its area, needed by no unit, is unmounted). Its Size= cap, its
place in `systemctl list-units '*usroverlay*'` and `sdoverlay list`, and
reset, remove and persist are those of any other overlay.

Only overlays of the mount kind go in the burst; one on a path that is a
mount point already is mounted by its own service, as at any other time.
"""

from __future__ import annotations

import os
import shlex

from sdoverlay import units
from sdoverlay.spec import BURST_UNIT, OverlaySpec

UNIT = BURST_UNIT
SCRIPT = "sdoverlay-boot.sh"
AREAS_FSTAB = "sdoverlay-areas.fstab"
OVERLAYS_FSTAB = "sdoverlay-overlays.fstab"


def _fstab_line(what: str, where: str, fs_type: str, options: str) -> str:
    # fstab(5) fields are separated by white space and escaped with '\\':
    # a TARGET has neither (paths.check_path_chars refuses both).
    return f"{what} {where} {fs_type} {options} 0 0\n"


def _layer_commands(spec: OverlaySpec) -> tuple[list[str], list[tuple[str, str]]]:
    """(commands, [(install options, fresh upper dir)]) that make SPEC's
    writable layers: fresh upper dirs are made together, per owner and mode."""
    if spec.read_only:
        return [], []
    target = os.stat(spec.target)
    upper_mode = f"-m {target.st_mode & 0o7777:04o} -o {target.st_uid} -g {target.st_gid}"
    if not spec.persistent:
        return [], [(upper_mode, spec.upper_dir)]
    # A persistent upper dir keeps what was done to the merged root itself.
    return [
        f"install -d -m 0700 {shlex.quote(spec.persistent_dir)}",
        f"test -d {shlex.quote(spec.upper_dir)} || install -d {upper_mode} {shlex.quote(spec.upper_dir)}",
    ], []


def script(specs: list[OverlaySpec], output_dir: str, python: str) -> str:
    """The burst as a shell script; SPECS are the overlays in it."""
    lines = [
        "# Written by sdoverlay-generator: mounts the overlays of drop-ins in one burst",
        "# (see sdoverlay/burst.py). Their own units run after it.",
        "failed=0",
        f"mount --all --fstab {shlex.quote(os.path.join(output_dir, AREAS_FSTAB))} || failed=1",
    ]
    fresh: dict[str, list[str]] = {}
    work_dirs = []
    for spec in specs:
        commands, uppers = _layer_commands(spec)
        lines += [f"{command} || failed=1" for command in commands]
        for options, upper in uppers:
            fresh.setdefault(options, []).append(upper)
        if not spec.read_only:
            work_dirs.append(spec.work_dir)
    for options, uppers in sorted(fresh.items()):
        lines.append(f"install -d {options} {' '.join(map(shlex.quote, uppers))} || failed=1")
    if work_dirs:
        lines.append(f"install -d -m 0700 {' '.join(map(shlex.quote, work_dirs))} || failed=1")
    sourced = [spec.metadata_options for spec in specs if spec.source]
    if sourced:
        lines.append(f"{shlex.quote(python)} -m sdoverlay.populate {' '.join(map(shlex.quote, sourced))} || failed=1")
    lines.append(f"mount --all --fstab {shlex.quote(os.path.join(output_dir, OVERLAYS_FSTAB))} || failed=1")
    # Only after a failure: say which overlays are not mounted. Their own
    # units run next and do what is missing (an area that is mounted stays:
    # unmounting it here raced with systemd, which had not yet seen the
    # unmount when their jobs ran), or fail with systemd's own reason; an
    # area no unit needs then is unmounted by systemd (StopWhenUnneeded=).
    lines += [
        '[ "$failed" = 0 ] && exit 0',
        "overlay_mounted() {",
        "    while read -r what where type rest; do",
        '        [ "$where" = "$1" ] && [ "$type" = overlay ] && return 0',
        "    done < /proc/self/mounts",
        "    return 1",
        "}",
    ]
    for spec in specs:
        lines.append(f"overlay_mounted {shlex.quote(spec.target)} || "
                     f"echo 'overlay {spec.name}: not mounted in the burst; its own units try again'")
    lines.append("exit 0")
    return "\n".join(lines) + "\n"


def unit(specs: list[OverlaySpec], output_dir: str) -> str:
    # The mounts TARGET lies on (its parent's: TARGET's own .mount unit is
    # the overlay, ordered after this), SOURCE's and the persistent dir's.
    needs = sorted({path for spec in specs for path in
                    [os.path.dirname(spec.target), *([spec.source] if spec.source else []),
                     *([spec.persistent_dir] if spec.persistent else [])]})
    return "\n".join([
        "# Written by sdoverlay-generator (see sdoverlay/burst.py).",
        "[Unit]",
        "Description=sdoverlay: mount the overlays of drop-ins in one burst",
        "Documentation=man:sdoverlay.d(5)",
        "DefaultDependencies=no",
        "Conflicts=umount.target",
        "Before=local-fs.target umount.target",
        f"RequiresMountsFor={units.word_list(needs)}",
        "",
        "[Service]",
        "Type=oneshot",
        "RemainAfterExit=yes",
        f"ExecStart=/bin/sh {units.exec_quote(os.path.join(output_dir, SCRIPT))}",
    ]) + "\n"


def fstabs(specs: list[OverlaySpec]) -> tuple[str, str]:
    """The areas' and the overlays' fstab, in the order they are mounted."""
    areas = "".join(_fstab_line("tmpfs", spec.area, "tmpfs", spec.area_options + ",X-mount.mkdir") for spec in specs)
    overlays = "".join(_fstab_line("overlay", spec.target, "overlay", spec.overlay_options) for spec in specs)
    return areas, overlays
