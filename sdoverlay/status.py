"""What overlays there are and how they are: `list`, and every lookup by name.

Kept apart from sdoverlay.overlays (which changes them) so that `sdoverlay
list` imports only this, the bus and the mount tables (issue 9: start-up is
imports). The number of D-Bus calls does not grow with the number of
overlays (tests/test_scale.py).
"""

from __future__ import annotations

import os
import stat
import time

from sdoverlay import mountinfo, paths
from sdoverlay import spec as spec_module
from sdoverlay.errors import NotFound
from sdoverlay.record import record
from sdoverlay.spec import OverlaySpec
from sdoverlay.unitqueries import MOUNT, SERVICE, UNIT, SystemdQueries, UnitState

TYPE_CHECKING = False  # typing is not imported at run time (sdoverlay.record)
if TYPE_CHECKING:
    from typing import Any

AREA_UNIT_PATTERN = "run-usroverlay-*.mount"


@record  # not a dataclass: see sdoverlay.record (list imports this)
class OverlayStatus:
    spec: OverlaySpec
    # active, degraded (active but broken: see problem), detached (removed,
    # its memory held by processes), failed, inactive, activating/deactivating
    state: str
    size_limit_bytes: int | None
    problem: str | None = None  # why it is degraded or detached
    # What the area's tmpfs holds: content, upper and work together (from
    # statvfs: walking the upper dir cost 64 ms for 20,000 files, issue 9).
    area_used_bytes: int | None = None
    # systemd's ActiveState of the area and of the overlay unit.
    area_unit_state: str = "inactive"
    overlay_unit_state: str = "inactive"
    # The mount ID of our overlay's mount on its target (our_overlay_mount),
    # None where it is not mounted: who uses it (details, remove) without a
    # second read of the mount table (1.8 ms with 300 overlays, issue 9).
    overlay_mount_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        spec = self.spec
        return {
            "name": spec.name,
            "target": spec.target,
            "source": spec.source,
            "sources": spec.sources,
            "owner_uid": spec.owner_uid,
            "created_at": spec.created_at,
            "read_only": spec.read_only,
            "size_limit_bytes": self.size_limit_bytes,
            "area_used_bytes": self.area_used_bytes,
            "state": self.state,
            "problem": self.problem,
            "units": spec.units,
            "kind": spec.kind,
            "lazy_unmount": spec.lazy_unmount,
            "session": spec.session,
            "keep_ownership": spec.keep_ownership,
            "allow_setuid": spec.allow_setuid,
            "allow_world_writable": spec.allow_world_writable,
            "persistent": spec.persistent,
            "dropin": spec.dropin or None,
            "private": spec.private,
        }


async def _statuses(systemd: SystemdQueries, areas: dict[str, UnitState], mounts: list[mountinfo.MountEntry],
                    from_kernel: bool) -> list[OverlayStatus]:
    """The status of each overlay whose area unit is in AREAS, sorted by name.

    The number of D-Bus calls does not grow with the number of overlays
    (issue 9): an area's metadata comes from its unit's file (systemd's
    transient one, or the generator's; one property read for an area unit
    that has neither), the overlay and detached units' states from one
    ListUnitsByNames. FROM_KERNEL
    (list): an overlay the kernel shows mounted is active without asking
    systemd, which is then asked about the others only: the reply for 500
    overlays took 14 ms to unpack in dbus-next.
    """
    specs = await _specs(systemd, areas)
    mounts_on: dict[str, list[mountinfo.MountEntry]] = {}  # one pass over MOUNTS, not one per overlay
    for entry in mounts:
        mounts_on.setdefault(entry.mount_point, []).append(entry)
    # Each overlay's mount, looked for once: it says both whether systemd
    # need be asked and whether the overlay is healthy.
    ours = {spec.name: our_overlay_mount(spec, mounts_on.get(spec.target, [])) for spec, _ in specs}
    mounted = {name for name, entry in ours.items() if from_kernel and entry is not None}
    states = await systemd.active_states([unit for spec, _ in specs if spec.name not in mounted
                                          for unit in (spec.overlay_unit, spec.detached_unit)])
    by_id = {entry.mount_id: entry for entry in mounts}
    return [_status(spec, area_state, "active" if spec.name in mounted else states[spec.overlay_unit],
                    "inactive" if spec.name in mounted else states[spec.detached_unit], ours[spec.name], by_id)
            for spec, area_state in sorted(specs, key=lambda item: item[0].name)]


async def _specs(systemd: SystemdQueries, areas: dict[str, UnitState]) -> list[tuple[OverlaySpec, str]]:
    """(spec, area ActiveState) of each of AREAS that is an overlay of ours."""
    specs = []
    for area_unit, area in sorted(areas.items()):
        # The name is the area unit's, unescaped: an area unit of no valid
        # name is not ours, and comparing names spares escaping each spec's
        # area path back into a unit name (issue 9).
        name = paths.name_of_area_unit(area_unit)
        if name is None or not area.exists:
            continue
        metadata = await _metadata(systemd, area_unit, name)
        spec = _spec_of(metadata or "")
        if spec is not None and spec.name == name:
            specs.append((spec, area.active))  # else not ours: no sdoverlay metadata
    return specs


async def _metadata(systemd: SystemdQueries, area_unit: str, name: str) -> str | None:
    """The metadata of overlay NAME, whose area unit is AREA_UNIT: in that
    unit, or in the overlay's detached unit. A persistent overlay removed
    while in use has only the latter: its generated units went with its
    drop-in, and systemd keeps its still mounted area as a unit without a
    file. Read from the units' files (no D-Bus call per overlay, issue 9),
    from their property where a file does not have it."""
    units = [(area_unit, MOUNT), (spec_module.detached_unit_name(name), SERVICE)]
    for unit, _interface in units:
        metadata = _unit_file_metadata(unit)
        if metadata is not None:
            return metadata
    for unit, interface in units:
        path = await systemd.unit_path(unit)
        if path is not None:
            fields = [bytes(field).decode("utf-8", "surrogateescape")
                      for field in await systemd.unit_property(path, interface, "LogExtraFields")]
            metadata = spec_module.metadata_in_log_fields(fields)
            if metadata is not None:
                return metadata
    return None


def _spec_of(metadata: str) -> OverlaySpec | None:
    """spec_from_metadata of METADATA, remembered: sdoverlay's service
    stays up between requests, and each new overlay is checked against
    every other (parsing 300 overlays' metadata took 1.4 ms of each)."""
    if metadata not in _specs_by_metadata:  # None (not ours) is remembered too
        if len(_specs_by_metadata) >= _SPECS_REMEMBERED:
            _specs_by_metadata.clear()
        _specs_by_metadata[metadata] = spec_module.spec_from_metadata(spec_module.parse_metadata(metadata))
    return _specs_by_metadata[metadata]


_specs_by_metadata: dict[str, OverlaySpec | None] = {}
_SPECS_REMEMBERED = 1024


# The metadata line as sdoverlay.units writes it (area and detached units)
# and systemd keeps it in a transient unit's file: the field on a line of
# its own, '%' as '%%'.
_METADATA_LINE = f"\nLogExtraFields={spec_module.METADATA_FIELD}=".encode()


def _unit_file_metadata(unit: str) -> str | None:
    """The metadata in UNIT's file: systemd's own for a transient unit (an
    overlay made by the CLI, a detached unit), which takes precedence as in
    systemd's unit search path, or the generator's (a boot overlay, which
    systemd may not have loaded). No D-Bus call per overlay (issue 9), and
    os.read rather than open(): 300 files in 1.6 ms instead of 3.8.
    None where neither file has it (a unit from /etc, say)."""
    for directory in (paths.TRANSIENT_UNITS_DIR, paths.GENERATED_UNITS_DIR):
        try:
            fd = os.open(os.path.join(directory, unit), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            text = _read_all(fd)
        finally:
            os.close(fd)
        start = text.rfind(_METADATA_LINE)
        if start >= 0:
            start += len(_METADATA_LINE)
            end = text.find(b"\n", start)
            line = text[start:end if end >= 0 else len(text)].rstrip()
            return line.decode("utf-8", "surrogateescape").replace("%%", "%")
    return None


def _read_all(fd: int) -> bytes:
    # An area unit's file is 1-2 KiB: one read, into a buffer no larger than
    # needed (os.read allocates the size asked for: 1 MiB each cost more than
    # the rest of list).
    chunks = [os.read(fd, 16384)]
    while len(chunks[-1]) == 16384:
        chunks.append(os.read(fd, 16384))
    return b"".join(chunks)


def _status(spec: OverlaySpec, area_state: str, overlay_state: str, detached_state: str,
            overlay_mount: mountinfo.MountEntry | None, mounts_by_id: dict[int, mountinfo.MountEntry]) -> OverlayStatus:
    """OVERLAY_MOUNT: our_overlay_mount of SPEC; MOUNTS_BY_ID: the mount table."""
    states = {area_state, overlay_state}
    if "failed" in states:
        state = "failed"
    elif states == {"active"}:
        state = "active"
    elif states <= {"active", "inactive"}:
        state = "inactive"
    else:
        state = overlay_state if overlay_state != "active" else area_state

    size_limit = area_used = None
    if area_state == "active":
        stats = os.statvfs(spec.area)
        size_limit = stats.f_blocks * stats.f_frsize
        area_used = (stats.f_blocks - stats.f_bfree) * stats.f_frsize
    problem = None
    if state == "active":
        problem = _health_problem(spec, overlay_mount)
        if problem is not None:
            state = "degraded"
        elif overlay_mount is not None:
            problem = _cover_problem(spec, overlay_mount, mounts_by_id)
            if problem is not None:
                state = "hidden"
    elif overlay_state == "inactive" and area_state == "active" and detached_state == "active":
        state = "detached"
        problem = f"removed, but processes still use the overlay; {area_used} bytes stay allocated until they exit"
    elif state == "inactive" and area_state == "active" and overlay_mount is None:
        problem = (f"not mounted on {spec.target} (stopped behind sdoverlay's back); its area keeps what was "
                   f"written: 'sdoverlay remove {spec.name}' frees it")
    return OverlayStatus(spec, state, size_limit, problem, area_used, area_state, overlay_state,
                         overlay_mount.mount_id if overlay_mount is not None else None)


def _health_problem(spec: OverlaySpec, overlay_mount: mountinfo.MountEntry | None) -> str | None:
    """Why an overlay whose units are active does not work, or None.

    Its units can be active while it is broken: a service-kind overlay
    unmounted by hand, or an upper dir deleted behind its back (every write
    then fails with ENOENT/ESTALE, issue 7, item 9). `reset` repairs both.
    A caller who may not look into the area (root's, mode 0700) is told
    what the mount table shows.
    """
    if overlay_mount is None:
        return f"not mounted on {spec.target}"
    if not spec.read_only:
        for layer in (spec.upper_dir, spec.work_dir):
            # One stat each, no access() first: access() and two isdir()
            # took 6 us of the ~50 us list spends per overlay (issue 9).
            try:
                is_dir = stat.S_ISDIR(os.stat(layer).st_mode)
            except PermissionError:
                return None  # the caller may not look in there: the mount table is all it gets
            except OSError:
                is_dir = False
            if not is_dir:
                return f"{layer} is missing: writes fail; 'sdoverlay reset {spec.name}' repairs it"
    return None


def _cover_problem(spec: OverlaySpec, overlay_mount: mountinfo.MountEntry,
                   mounts_by_id: dict[int, mountinfo.MountEntry]) -> str | None:
    """Why an overlay that is mounted is not what TARGET shows, or None.

    A mount made later on TARGET or on a dir above it covers the overlay,
    which stays mounted, unseen: `systemd-sysext merge` mounts its own
    overlay on /usr, and before systemd 256 leaves the mounts below /usr
    where they were, under it (systemd#31922; 256 and later move them on
    top). An overlay on /usr itself is covered by the merge in every
    version: the extensions are stacked over it, read-only."""
    # A dir on an overlay has the overlay's own device number (st_dev), so
    # one stat says the overlay is what TARGET shows: 2 us, where the
    # mount ID of an O_PATH descriptor (below) took 13 us an overlay.
    try:
        device = os.stat(spec.target).st_dev
    except OSError:
        return None
    if f"{os.major(device)}:{os.minor(device)}" == overlay_mount.device:
        return None
    visible = mountinfo.visible_mount_id(spec.target)
    if visible is None or visible == overlay_mount.mount_id:
        return None
    cover = mounts_by_id.get(visible)
    if cover is None:
        return None  # mounted after the table was read: the next look sees it
    if is_our_overlay(spec, cover):
        return None  # ours, moved or cloned (systemd-sysext 256+ moves the mounts below /usr)
    if cover.source == SYSEXT_SOURCE:
        by, until = "systemd-sysext's overlay", "until that is unmounted (systemd-sysext unmerge)"
    elif cover.fs_type == "overlay" and OSTREE_UNLOCK_UPPER in cover.super_options:
        by, until = "ostree admin unlock's overlay", "until the next boot, which ends that overlay"
    elif cover.fs_type == "overlay" and OSTREE_HOTFIX_UPPER in cover.super_options:
        by, until = "ostree admin unlock --hotfix's overlay", "for as long as this deployment is booted"
    else:
        by, until = f"a mount of type {cover.fs_type}", "until that is unmounted"
    return f"hidden by {by} on {cover.mount_point}, mounted after it: {spec.target} shows what lies there, " \
           f"not this overlay, {until}"


# systemd-sysext mounts its overlay with this source (src/sysext/sysext.c).
SYSEXT_SOURCE = "sysext"
# Where `ostree admin unlock` keeps its overlay's upper dir, and `unlock
# --hotfix` its own, in the deployment (src/libostree/ostree-sysroot-deploy.c,
# ostree_sysroot_deployment_unlock).
OSTREE_UNLOCK_UPPER = "upperdir=/var/tmp/ostree-unlock-ovl."
OSTREE_HOTFIX_UPPER = "upperdir=.usr-ovl-upper"


# How long find() waits for systemd to see mounts the kernel has: it reads
# mountinfo at most 5 times a second (a rate limit), and the boot burst
# mounts behind its back (sdoverlay.burst).
SETTLE_SECONDS = 3.0


async def find(systemd: SystemdQueries, name: str) -> OverlayStatus:
    """NAME's status, as systemd sees it once it has caught up with the kernel."""
    area_unit = paths.mount_unit_name(paths.area_dir(name))
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        mounts = mountinfo.read()
        found = await _statuses(systemd, await systemd.units_by_name([area_unit]), mounts, from_kernel=False)
        if not found:
            stale = stale_status(name)
            if stale is not None:
                return stale
            raise NotFound(f"no overlay named {name!r}")
        if not _systemd_behind(found[0], mounts) or time.monotonic() > deadline:
            return found[0]
        await systemd.pause(0.1)


def _systemd_behind(status: OverlayStatus, mounts: list[mountinfo.MountEntry]) -> bool:
    """Does the kernel have the overlay's area or overlay mounted while
    systemd has not seen it yet (its units inactive)?"""
    if status.area_unit_state == "active" and status.overlay_unit_state == "active":
        return False
    return ((status.area_unit_state == "inactive" and mountinfo.is_mount_point(status.spec.area, mounts))
            or (status.overlay_unit_state == "inactive" and our_overlay_mount(status.spec, mounts) is not None))


async def list_all(systemd: SystemdQueries) -> list[OverlayStatus]:
    """Every overlay (see _all_areas), the stale ones too."""
    mounts = mountinfo.read()
    found = await _statuses(systemd, await _all_areas(systemd, mounts), mounts, from_kernel=True)
    try:
        stale_names = os.listdir(STALE_DIR)
    except OSError:
        return found
    listed = {status.spec.name for status in found}
    stale = [status for status in map(stale_status, sorted(stale_names)) if status is not None and status.spec.name not in listed]
    return sorted(found + stale, key=lambda status: status.spec.name) if stale else found


# Where the generator says which drop-ins it did not mount for being made
# on another image (sdoverlay.generator.STALE_DIR; the generator is not
# imported here, for list's start-up).
STALE_DIR = f"{paths.GENERATED_UNITS_DIR}/sdoverlay-stale"


def stale_status(name: str) -> OverlayStatus | None:
    """Overlay NAME as the generator left it for being stale, if it did."""
    try:
        with open(f"{STALE_DIR}/{name}", encoding="utf-8") as file:
            made_for, running, metadata = (file.read().split("\n") + ["", "", ""])[:3]
    except OSError:
        return None
    spec = _spec_of(metadata)
    if spec is None or spec.name != name:
        return None
    from sdoverlay import imageid  # not for the common case of list

    problem = (f"made on {imageid.describe(made_for)}, this boot runs {imageid.describe(running)}: not mounted; "
               f"'sdoverlay remove {name}' removes it, 'sdoverlay persist --rebase {name}' lays it over this image")
    return OverlayStatus(spec, "stale", None, problem)


async def all_specs(systemd: SystemdQueries, mounts: list[mountinfo.MountEntry]) -> list[OverlaySpec]:
    """What every overlay is, without its state: for the checks on a new one."""
    return [spec for spec, _ in await _specs(systemd, await _all_areas(systemd, mounts))]


async def _all_areas(systemd: SystemdQueries, mounts: list[mountinfo.MountEntry]) -> dict[str, UnitState]:
    """Every area unit. Areas the kernel has mounted are taken as active
    (systemd reads mountinfo at most 5 times a second and may lag behind),
    and only the others are asked of systemd: the reply stays small with
    many overlays."""
    areas = {paths.mount_unit_name(entry.mount_point): UnitState(load="loaded", active="active")
             for entry in mounts
             if entry.fs_type == "tmpfs" and os.path.dirname(entry.mount_point) == paths.AREA_ROOT}
    for unit, state in (await systemd.list_units([AREA_UNIT_PATTERN], states=NOT_ACTIVE)).items():
        areas.setdefault(unit, state)
    # A boot overlay's units are loaded when systemd sees their mounts (or
    # something names them): one the burst could not mount, or one removed,
    # may be among no units systemd lists. Its generated unit is there.
    for unit in _generated_area_units():
        areas.setdefault(unit, UnitState(load="loaded", active="inactive"))
    return areas


def _generated_area_units() -> list[str]:
    prefix, suffix = AREA_UNIT_PATTERN.split("*")
    try:
        names = os.listdir(paths.GENERATED_UNITS_DIR)
    except OSError:
        return []
    return [name for name in names if name.startswith(prefix) and name.endswith(suffix)]


# Every ActiveState but "active" (ListUnitsByPatterns' filter).
NOT_ACTIVE = ["inactive", "failed", "activating", "deactivating", "reloading", "maintenance"]


DETACHED_UNIT_PATTERN = spec_module.detached_unit_name("*")
_DETACHED_PREFIX, _DETACHED_SUFFIX = DETACHED_UNIT_PATTERN.split("*")


async def detached_names(systemd: SystemdQueries) -> set[str]:
    """The names of the overlays that are detached now: removed from their
    targets, their memory held by processes (their detached units run)."""
    units = await systemd.list_units([DETACHED_UNIT_PATTERN], states=["active", "activating"])
    return {unit[len(_DETACHED_PREFIX):-len(_DETACHED_SUFFIX)] for unit in units}


async def detached_holders(systemd: SystemdQueries, spec: OverlaySpec) -> list[Any]:
    """The processes that hold SPEC's detached overlay (holders.Holder):
    its mount has no path any more, only the mount ID its detached unit
    waits on (the last argument but one of its ExecStart=)."""
    from sdoverlay import holders  # not for `list`

    path = await systemd.unit_path(spec.detached_unit)
    if path is None:
        return []
    commands = await systemd.unit_property(path, SERVICE, "ExecStart")
    argv = commands[0][1] if commands else []
    if len(argv) < 2 or not str(argv[-2]).isdigit():
        return []
    return holders.holders({int(argv[-2])})


async def runs_of(systemd: SystemdQueries, name: str) -> list[dict[str, Any]]:
    """The `sdoverlay run`s in private overlay NAME whose commands still
    run: each one's unit, main pid and command (from its Description).
    They write to the overlay from mount namespaces of their own, where no
    mount ID of ours shows them: their units do."""
    prefix = spec_module.run_unit_prefix(name)
    found = []
    for unit, state in sorted((await systemd.list_units([f"{prefix}*.service"])).items()):
        if not unit[len(prefix):-len(".service")].isdigit():
            continue  # another overlay's, whose name begins with NAME-
        if state.active not in ("active", "activating", "deactivating") or state.sub == "exited":
            continue  # COMMAND has exited; its unit waits for the service to read its status
        path = await systemd.unit_path(unit)
        if path is None:
            continue
        pid = await systemd.unit_property(path, SERVICE, "MainPID")
        description = str(await systemd.unit_property(path, UNIT, "Description"))
        found.append({"pid": int(pid), "command": "sdoverlay run: " + description.partition(": ")[2],
                      "unit": unit})
    return found


def our_overlay_mount(spec: OverlaySpec, mounts: list[mountinfo.MountEntry] | None = None) -> mountinfo.MountEntry | None:
    """The mount of an overlay with this spec's layers on its target (ours, not anyone's)."""
    for entry in mountinfo.mounts_at(spec.target, mounts if mounts is not None else mountinfo.read()):
        if is_our_overlay(spec, entry):
            return entry
    return None


def is_our_overlay(spec: OverlaySpec, entry: mountinfo.MountEntry) -> bool:
    """Is ENTRY an overlay with this spec's layers (ours, wherever it is mounted)?"""
    if entry.fs_type != "overlay":
        return False
    options = entry.super_options.split(",")
    if spec.read_only and spec.source:
        return any(option.startswith(f"lowerdir={spec.content_layers()[0]}:") for option in options)
    return not spec.read_only and f"upperdir={spec.upper_dir}" in options
