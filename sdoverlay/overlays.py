"""The overlay operations: apply, find, list, reset, remove.

Each one talks to systemd through sdoverlay.bus, waits for its jobs and
either finishes or rolls back what it created.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from typing import Any

from sdoverlay import (
    content,
    diagnostics,
    holders,
    kinds,
    mountinfo,
    paths,
    sizes,
    unitfile,
    units,
)
from sdoverlay.bus import Systemd
from sdoverlay.config import Config
from sdoverlay.dbusnext import asyncio  # without ssl: see there
from sdoverlay.errors import (
    Conflict,
    LimitExceeded,
    NotFound,
    OperationFailed,
    PermissionDenied,
    SdoverlayError,
)
from sdoverlay.spec import OverlaySpec
from sdoverlay.status import (
    SYSEXT_SOURCE,
    OverlayStatus,
    all_specs,
    detached_holders,
    detached_names,
    find,
    our_overlay_mount,
    stale_status,
)
from sdoverlay.unitqueries import MOUNT, SERVICE


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _active_state(systemd: Systemd, unit: str) -> str:
    return (await systemd.active_states([unit]))[unit]


async def check_new(systemd: Systemd, spec_name: str, target: str, size: str, owner_uid: int, limits: Config,
                    mounts: list[mountinfo.MountEntry]) -> None:
    """Refuse a new overlay whose name is taken, whose target meets another
    overlay's or would hide other mounts (MOUNTS, the kernel's mount table),
    or that is over its owner's quota."""
    area_unit = paths.mount_unit_name(paths.area_dir(spec_name))
    detached = await detached_names(systemd)
    if (await systemd.units_by_name([area_unit]))[area_unit].exists:
        if spec_name in detached:
            await check_not_detached(systemd, await find(systemd, spec_name),
                                     "choose another --name, or end those processes to free the name")
        raise Conflict(f"an overlay named {spec_name!r} exists already")
    stale = stale_status(spec_name)
    if stale is not None:
        raise Conflict(f"an overlay named {spec_name!r} exists already, stale: {stale.problem}")
    existing = await all_specs(systemd, mounts)
    for other in existing:
        # A detached overlay is on no target any more: neither its target
        # nor what lies under it is taken (after `remove` of an unlocked
        # /usr its holders often live until the next reboot).
        if other.name not in detached and paths.overlaps(target, other.target):
            raise Conflict(f"{target} overlaps {other.target}, the target of overlay {other.name!r}")
    await _check_sysext(systemd, target, mounts)
    hidden = sorted({
        entry.mount_point for entry in mounts
        if entry.mount_point != target and paths.is_within(entry.mount_point, target)
    })
    if hidden:
        raise Conflict(f"{target} has mounts beneath it that the overlay would hide: {', '.join(hidden)}")
    owned = [other for other in existing if other.owner_uid == owner_uid]
    if limits.max_overlays_per_owner is not None and len(owned) >= limits.max_overlays_per_owner:
        raise LimitExceeded(
            f"uid {owner_uid} has {len(owned)} overlay(s), the most MaxOverlaysPerOwner= allows"
        )
    if limits.max_bytes_per_owner is not None:
        used = sum(sizes.tmpfs_size_bytes(other.size) for other in owned)
        wanted = sizes.tmpfs_size_bytes(size)
        if used + wanted > limits.max_bytes_per_owner:
            raise LimitExceeded(
                f"uid {owner_uid} would have {used + wanted} bytes of overlays ({used} now, {wanted} asked), "
                f"over MaxBytesPerOwner={limits.max_bytes_per_owner}"
            )


# The first systemd whose sysext merge and unmerge move the mounts below a
# hierarchy along instead of hiding or taking them (systemd#31922).
SYSEXT_KEEPS_MOUNTS_SINCE = 256


async def _check_sysext(systemd: Systemd, target: str, mounts: list[mountinfo.MountEntry]) -> None:
    """Refuse an overlay that a merged system extension and it would break.

    On the hierarchy itself (/usr), the overlay would cover sysext's own
    mount: `systemd-sysext unmerge` and `refresh` look at the topmost mount
    there, find ours, report "none" and leave the extensions merged below
    it. Below it, before systemd 256, unmerge takes the overlay and all that
    was written to it along; 256 and later move it back, unharmed."""
    merged = [entry.mount_point for entry in mounts if entry.fs_type == "overlay" and entry.source == SYSEXT_SOURCE
              and paths.is_within(target, entry.mount_point)]
    if not merged:
        return
    if target in merged:
        raise Conflict(f"systemd-sysext has merged extensions into {target}: an overlay on it would hide the merge "
                       "from systemd-sysext, whose unmerge and refresh would leave the extensions in place; run "
                       "'systemd-sysext unmerge' first, or choose a dir below it")
    version = await systemd.version()
    if version < SYSEXT_KEEPS_MOUNTS_SINCE:
        raise Conflict(f"systemd-sysext has merged extensions into {merged[0]}, and the unmerge or refresh of "
                       f"systemd {version} takes the mounts below it along (systemd {SYSEXT_KEEPS_MOUNTS_SINCE} "
                       f"keeps them): this overlay on {target} and what is written to it would be lost; run "
                       "'systemd-sysext unmerge' first")


async def check_not_detached(systemd: Systemd, status: OverlayStatus, advice: str) -> None:
    """Refuse to act on a detached overlay, saying who holds it and ADVICE:
    there is nothing left of it to act on but the memory its holders pin."""
    if status.state != "detached":
        return
    users = await detached_holders(systemd, status.spec)
    who = f"still used by {holders.listed(users)}" if users else "its last users are exiting"
    raise Conflict(f"overlay {status.spec.name!r} is detached from {status.spec.target}: {who}, which keep "
                   f"{sizes.human_bytes(status.area_used_bytes)} allocated until they exit; {advice}")


def check_owner(status: OverlayStatus, caller_uid: int, force: bool, verb: str) -> None:
    """Refuse to act on someone else's overlay unless forced."""
    owner = status.spec.owner_uid
    if owner != caller_uid and not force:
        raise PermissionDenied(
            f"overlay {status.spec.name!r} belongs to uid {owner}, not {caller_uid}; pass --force to {verb} it anyway"
        )


async def mount_plan(systemd: Systemd, target: str, mounts: list[mountinfo.MountEntry],
                     private: bool = False) -> dict[str, Any]:
    """kinds.mount_plan, with "taken" asked of the kernel (MOUNTS) and of systemd
    (a recently unmounted path's .mount unit lingers until garbage-collected)."""
    if private:
        return kinds.mount_plan(target, target_taken=False, private=True)
    unit = paths.mount_unit_name(target)
    taken = mountinfo.is_mount_point(target, mounts) or (await systemd.units_by_name([unit]))[unit].exists
    return kinds.mount_plan(target, taken)


def _our_overlay_mounted(spec: OverlaySpec) -> bool:
    return our_overlay_mount(spec) is not None


async def _run(systemd: Systemd, unit: str, job: Any) -> None:
    """Await a job coroutine for UNIT and raise with the unit's real failure."""
    since = diagnostics.log_point()
    result = await job
    if result != "done":
        raise OperationFailed(await _explain(systemd, unit, result, since))


async def _explain(systemd: Systemd, unit: str, job_result: str, since: diagnostics.LogPoint) -> str:
    """Why UNIT's job failed: the unit's own Result where it has one, and its logs."""
    result = job_result
    path = await systemd.unit_path(unit)
    if path is not None:
        interface = MOUNT if unit.endswith(".mount") else SERVICE
        unit_result = await systemd.unit_property(path, interface, "Result")
        if unit_result and unit_result != "success":
            result = unit_result
    return diagnostics.explain(unit, result, since)


async def _stop(systemd: Systemd, unit: str, mode: str = "replace") -> str | None:
    """Stop UNIT and wait; the reason it failed, or None."""
    since = diagnostics.log_point()
    try:
        result = await systemd.stop_unit(unit, mode)
    except NotFound:
        return None  # not loaded: nothing to stop
    if result == "done":
        return None
    return await _explain(systemd, unit, result, since)


async def _explain_failed(systemd: Systemd, spec: OverlaySpec, job_result: str, since: diagnostics.LogPoint) -> str:
    """Explain the first of SPEC's units that failed (a dependency's failure
    makes the last job fail with result 'dependency'). Only the overlay's
    own unit is explained with the kernel's overlayfs lines."""
    states = await systemd.active_states(spec.units)
    failed = next((unit for unit in spec.units if states[unit] == "failed"), spec.overlay_unit)
    return await _explain(systemd, failed, job_result, since if failed == spec.overlay_unit else since.without_kernel())


def _busy_detail(spec: OverlaySpec) -> str:
    """Who keeps SPEC's overlay mounted, as '; used by PID (COMMAND), ...', or ''."""
    mount = our_overlay_mount(spec)
    if mount is None:
        return ""
    users = holders.holders({mount.mount_id})
    return f"; processes using {spec.target}: {holders.listed(users)}" if users else ""


async def teardown(systemd: Systemd, spec: OverlaySpec, keep_area: bool = False) -> list[str]:
    """Unmount the overlay, then its area; remove the area dir. Returns problems.

    The overlay goes first and alone: if it cannot be unmounted (target
    busy) it stays active, keeps binding its area, and nothing else changes.
    KEEP_AREA: the area and the hold unit that pins it stay (see remove).
    """
    failure = await _stop(systemd, spec.overlay_unit)
    if failure is None and _our_overlay_mounted(spec):
        failure = f"the overlay on {spec.target} is still mounted"
    if failure is not None:
        return [failure + _busy_detail(spec)]
    problems = []
    for unit in (spec.content_unit,) if keep_area else (spec.hold_unit, spec.content_unit, spec.area_unit):
        failure = await _stop(systemd, unit)
        if failure is not None:
            problems.append(failure)
    # A failed unit stays loaded and blocks its name for the next apply.
    states = await systemd.active_states([spec.overlay_unit, spec.hold_unit, spec.content_unit, spec.area_unit])
    for unit, state in states.items():
        if state == "failed":
            await systemd.reset_failed_unit(unit)
    if keep_area:
        return problems
    if mountinfo.is_mount_point(spec.area, mountinfo.read()):
        problems.append(f"{spec.area} is still mounted")
    else:
        content.remove_empty_area(spec.area)
    return problems


async def apply(systemd: Systemd, spec: OverlaySpec) -> OverlayStatus:
    """Create SPEC's units and start its overlay; on any failure undo it all.

    One StartTransientUnit call creates all three units; starting the
    overlay pulls in the area (BindsTo=) and the content unit (Requires=),
    which fills the area before the overlay is mounted.
    """
    area, content_unit, overlay = units.render(spec)
    since = diagnostics.log_point(mounting=spec.layer_roots)
    # If this call is refused (permission, conflict), nothing was created.
    result = await systemd.start_transient_unit(
        overlay.name,
        unitfile.to_properties(overlay.text),
        [(unit.name, unitfile.to_properties(unit.text)) for unit in (area, content_unit)],
    )
    if result != "done":
        # A failed unit stays loaded and blocks the name: undo everything.
        error = OperationFailed(await _explain_failed(systemd, spec, result, since))
        problems = await teardown(systemd, spec)
        if problems:
            error.message += "; rollback incomplete: " + "; ".join(problems)
        raise error
    return await find(systemd, spec.name)


async def start_overlay(systemd: Systemd, spec: OverlaySpec) -> str | None:
    """Start SPEC's existing overlay unit (pulling in its area and content
    units) and wait; why it failed, or None."""
    since = diagnostics.log_point(mounting=spec.layer_roots)
    result = await systemd.start_unit(spec.overlay_unit)
    if result == "done":
        return None
    return await _explain_failed(systemd, spec, result, since)


async def take_down(systemd: Systemd, spec: OverlaySpec, verb: str) -> None:
    """Unmount SPEC's overlay, keeping its area (and so its content) mounted.

    A hold unit binds the area meanwhile (it is StopWhenUnneeded=). If the
    overlay cannot be unmounted (busy), nothing changes and this raises.
    """
    since = diagnostics.log_point()
    result = await _start_hold(systemd, spec)
    try:
        if result != "done":
            raise OperationFailed(await _explain(systemd, spec.hold_unit, result, since))
        # ignore-dependencies: units that use the target are not stopped
        # behind the user's back; if they hold it busy, this says so.
        await _run(systemd, spec.overlay_unit, systemd.stop_unit(spec.overlay_unit, "ignore-dependencies"))
        if _our_overlay_mounted(spec):
            raise OperationFailed(f"{spec.target} is still mounted" + _busy_detail(spec))
    except SdoverlayError as error:
        await release_hold(systemd, spec)  # the overlay is still up and binds its area
        raise OperationFailed(f"cannot {verb} overlay {spec.name!r}: {error.message}") from error
    # The content unit goes too, and now rather than when systemd finds it
    # unneeded: bring_up must run it again to make new upper and work dirs,
    # and a content unit still active then would not run (a race seen in
    # benchmarks/bench_cli.py as "failed to resolve .../upper").
    failure = await _stop(systemd, spec.content_unit)
    if failure is not None:
        raise OperationFailed(f"cannot {verb} overlay {spec.name!r}: {failure}; its area is kept")


async def _start_hold(systemd: Systemd, spec: OverlaySpec) -> str:
    """Start SPEC's hold unit; the job's result.

    One may be there already: the host-wide lock is held, so it was left by a
    reset or persist that was killed (issue 7, item 4: the next reset failed
    with systemd's "Unit ... was already loaded"). Such a hold is adopted.
    """
    hold = (await systemd.units_by_name([spec.hold_unit]))[spec.hold_unit]
    if hold.active == "active":
        return "done"
    if hold.active == "failed":
        await systemd.reset_failed_unit(spec.hold_unit)
    if hold.load == "loaded":
        try:
            return await systemd.start_unit(spec.hold_unit)  # loaded, stopped, not yet garbage-collected
        except NotFound:
            pass
    rendered = units.render_hold(spec)
    return await systemd.start_transient_unit(rendered.name, unitfile.to_properties(rendered.text))


async def bring_up(systemd: Systemd, spec: OverlaySpec, verb: str) -> None:
    """Mount SPEC's overlay again after take_down, and let go of the area.

    The content unit re-creates missing upper and work dirs and keeps the
    filled content. If the overlay cannot be mounted, the hold stays, so
    that nothing applied is lost: the overlay is listed as failed.
    """
    reason = await start_overlay(systemd, spec)
    if reason is not None:
        raise OperationFailed(f"cannot {verb} overlay {spec.name!r}: {reason}; its area is kept")
    await release_hold(systemd, spec)


async def release_hold(systemd: Systemd, spec: OverlaySpec) -> None:
    failure = await _stop(systemd, spec.hold_unit)
    if await _active_state(systemd, spec.hold_unit) == "failed":
        await systemd.reset_failed_unit(spec.hold_unit)
    if failure is not None:
        raise OperationFailed(failure)


async def wait_until_unloaded(systemd: Systemd, unit_names: list[str], timeout: float = 5.0) -> None:
    """Wait for systemd to garbage-collect stopped transient units, so that a
    daemon-reload loads the generated units of the same names instead."""
    deadline = time.monotonic() + timeout
    for unit in unit_names:
        while await systemd.unit_path(unit) is not None:
            if time.monotonic() > deadline:
                raise OperationFailed(f"{unit} is still loaded after it was stopped")
            await asyncio.sleep(0.02)


@dataclasses.dataclass(frozen=True)
class Removal:
    spec: OverlaySpec
    # Processes that still used the overlay when it was detached lazily, and
    # the memory that stays allocated until they exit (issue 7, item 6).
    still_used_by: list[holders.Holder] = dataclasses.field(default_factory=list)
    held_bytes: int = 0


async def remove(systemd: Systemd, name: str, caller_pid: int = 0) -> Removal:
    """CALLER_PID, the process that asked, is not counted as a user of the
    overlay: after `unlock /usr/bin` the CLI runs from it (its Python), and
    it exits right after this answers."""
    status = await find(systemd, name)
    spec = status.spec
    await check_not_detached(systemd, status, "remove needs a live overlay")
    # An overlay unmounted lazily (the service kind, or one that covers
    # umount itself) goes away even while processes use it, and its memory
    # with it only when they exit: then a detached unit keeps the area, and
    # so the overlay, visible until that happens.
    users: list[holders.Holder] = []
    mount_id = status.overlay_mount_id
    if mount_id is not None and (spec.lazy_unmount or spec.kind == "service"):
        users = [user for user in holders.holders({mount_id}) if user.pid != caller_pid]
    if not users:
        problems = await teardown(systemd, spec)
        if problems:
            raise OperationFailed(f"cannot remove overlay {name!r}: " + "; ".join(problems))
        return Removal(spec)
    # The hold pins the area while the overlay is detached; the detached
    # unit starts only then, or its own program (mapped from TARGET through
    # the overlay, were TARGET /usr) would itself keep the overlay alive.
    since = diagnostics.log_point()
    result = await _start_hold(systemd, spec)
    if result != "done":
        raise OperationFailed(f"cannot remove overlay {name!r}: " + await _explain(systemd, spec.hold_unit, result, since))
    problems = await teardown(systemd, spec, keep_area=True)
    if problems:
        await release_hold(systemd, spec)
        raise OperationFailed(f"cannot remove overlay {name!r}: " + "; ".join(problems))
    detached = units.render_detached(spec, mount_id)  # type: ignore[arg-type]
    since = diagnostics.log_point()
    result = await systemd.start_transient_unit(detached.name, unitfile.to_properties(detached.text))
    await release_hold(systemd, spec)
    if result != "done":
        raise OperationFailed(f"removed overlay {name!r}, but cannot track its detached memory: "
                              + await _explain(systemd, detached.name, result, since))
    return Removal(spec, users, status.area_used_bytes or 0)


async def reset(systemd: Systemd, name: str) -> OverlayStatus:
    """Throw away what was written to NAME since apply, keep its applied content."""
    status = await find(systemd, name)
    spec = status.spec
    if spec.read_only:
        return status  # nothing can have been written
    await take_down(systemd, spec, "reset")
    try:
        content.remove_writable_layers(spec)
    except OSError as error:
        raise OperationFailed(
            f"cannot reset overlay {name!r}: {error.strerror}: {error.filename}; its area is kept"
        ) from error
    await bring_up(systemd, spec, "reset")
    return await find(systemd, name)
