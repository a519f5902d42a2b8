"""The overlay operations: apply, find, list, reset, remove.

Each one talks to systemd through sdoverlay.bus, waits for its jobs and
either finishes or rolls back what it created.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import time
from typing import Any

from sdoverlay import content, diagnostics, mountinfo, paths, spec as spec_module, unitfile, units
from sdoverlay.bus import UNIT, Systemd
from sdoverlay.errors import Conflict, NotFound, OperationFailed
from sdoverlay.spec import OverlaySpec

MOUNT = "org.freedesktop.systemd1.Mount"
AREA_UNIT_PATTERN = "run-usroverlay-*.mount"


@dataclasses.dataclass(frozen=True)
class OverlayStatus:
    spec: OverlaySpec
    state: str  # active, failed, inactive, or activating/deactivating
    size_limit_bytes: int | None
    upper_used_bytes: int

    def to_json(self) -> dict[str, Any]:
        spec = self.spec
        return {
            "name": spec.name,
            "target": spec.target,
            "source": spec.source,
            "owner_uid": spec.owner_uid,
            "created_at": spec.created_at,
            "read_only": spec.read_only,
            "size_limit_bytes": self.size_limit_bytes,
            "upper_used_bytes": self.upper_used_bytes,
            "state": self.state,
            "units": spec.units,
            "kind": spec.kind,
            "lazy_unmount": spec.lazy_unmount,
        }


def caller_uid() -> int:
    """The user an overlay is made for: the one behind sudo/pkexec, else the caller."""
    if os.getuid() == 0:
        for variable in ("SUDO_UID", "PKEXEC_UID"):
            value = os.environ.get(variable, "")
            if value.isdigit():
                return int(value)
    return os.getuid()


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _active_state(systemd: Systemd, unit: str) -> str:
    path = await systemd.unit_path(unit)
    if path is None:
        return "inactive"
    return (await systemd.unit_properties(path, UNIT))["ActiveState"]


async def _status(systemd: Systemd, area_unit: str) -> OverlayStatus | None:
    path = await systemd.unit_path(area_unit)
    if path is None:
        return None
    options = (await systemd.unit_properties(path, MOUNT)).get("Options", "")
    spec = spec_module.spec_from_metadata(spec_module.parse_metadata(options))
    if spec is None or spec.area_unit != area_unit:
        return None  # not ours: no sdoverlay metadata
    area_state = (await systemd.unit_properties(path, UNIT))["ActiveState"]
    overlay_state = await _active_state(systemd, spec.overlay_unit)
    states = {area_state, overlay_state}
    if "failed" in states:
        state = "failed"
    elif states == {"active"}:
        state = "active"
    elif states <= {"active", "inactive"}:
        state = "inactive"
    else:
        state = overlay_state if overlay_state != "active" else area_state

    size_limit = None
    upper_used = 0
    if area_state == "active":
        stats = os.statvfs(spec.area)
        size_limit = stats.f_blocks * stats.f_frsize
        if not spec.read_only and os.path.isdir(spec.upper_dir):
            upper_used = content.used_bytes(spec.upper_dir)
    return OverlayStatus(spec, state, size_limit, upper_used)


async def find(systemd: Systemd, name: str) -> OverlayStatus:
    status = await _status(systemd, paths.mount_unit_name(paths.area_dir(name)))
    if status is None:
        raise NotFound(f"no overlay named {name!r}")
    return status


async def list_all(systemd: Systemd) -> list[OverlayStatus]:
    found = []
    for unit in await systemd.list_unit_names([AREA_UNIT_PATTERN]):
        status = await _status(systemd, unit)
        if status is not None:
            found.append(status)
    return sorted(found, key=lambda s: s.spec.name)


async def check_free(systemd: Systemd, name: str, target: str) -> None:
    """Refuse a NAME in use, or a TARGET equal to, inside or around another overlay's."""
    if await systemd.unit_path(paths.mount_unit_name(paths.area_dir(name))) is not None:
        raise Conflict(f"an overlay named {name!r} exists already")
    for other in await list_all(systemd):
        if paths.overlaps(target, other.spec.target):
            raise Conflict(
                f"{target} overlaps {other.spec.target}, the target of overlay {other.spec.name!r}"
            )


def overlay_kind(target: str, mounts: list[mountinfo.MountEntry]) -> spec_module.OverlayKind:
    return "service" if mountinfo.is_mount_point(target, mounts) else "mount"


def _our_overlay_mounted(spec: OverlaySpec) -> bool:
    """Is an overlay with this spec's layers mounted on its target? (Ours, not anyone's.)"""
    for entry in mountinfo.mounts_at(spec.target, mountinfo.read()):
        options = entry.super_options.split(",")
        if entry.fs_type != "overlay":
            continue
        if spec.read_only and any(o.startswith(f"lowerdir={spec.content_dir}:") for o in options):
            return True
        if not spec.read_only and f"upperdir={spec.upper_dir}" in options:
            return True
    return False


async def _run(systemd: Systemd, unit: str, job: Any) -> None:
    """Await a job coroutine for UNIT and raise with the unit's real failure."""
    since_realtime, since_monotonic = time.time(), time.monotonic()
    result = await job
    if result != "done":
        raise OperationFailed(await _explain(systemd, unit, result, since_realtime, since_monotonic))


async def _explain(systemd: Systemd, unit: str, job_result: str, since_realtime: float, since_monotonic: float) -> str:
    path = await systemd.unit_path(unit)
    result = job_result
    if path is not None:
        for interface in (MOUNT, "org.freedesktop.systemd1.Service"):
            with contextlib.suppress(Exception):
                unit_result = (await systemd.unit_properties(path, interface)).get("Result")
                if unit_result and unit_result != "success":
                    result = f"{job_result}, {unit_result}"
                    break
    return diagnostics.explain(unit, result, since_realtime, since_monotonic)


async def teardown(systemd: Systemd, spec: OverlaySpec) -> list[str]:
    """Stop both units, clear failed states, remove the area dir. Returns problems."""
    problems = []
    since_realtime, since_monotonic = time.time(), time.monotonic()
    # Stopping the area stops the overlay first: it is BindsTo= and After= it.
    result = await systemd.stop_unit(spec.area_unit)
    if result != "done":
        problems.append(await _explain(systemd, spec.area_unit, result, since_realtime, since_monotonic))
    for unit in (spec.overlay_unit, spec.area_unit):
        if await _active_state(systemd, unit) == "failed":
            if not problems:
                problems.append(await _explain(systemd, unit, "failed", since_realtime, since_monotonic))
            await systemd.reset_failed_unit(unit)
    if _our_overlay_mounted(spec):
        problems.append(f"the overlay on {spec.target} is still mounted")
    elif not mountinfo.is_mount_point(spec.area, mountinfo.read()):
        content.remove_empty_area(spec.area)
    else:
        problems.append(f"{spec.area} is still mounted")
    return problems


async def apply(systemd: Systemd, spec: OverlaySpec) -> OverlayStatus:
    """Create SPEC's units, fill its area, mount it; on any failure undo it all."""
    area, overlay = units.render(spec)
    async with contextlib.AsyncExitStack() as undo:
        job = systemd.start_transient_unit(area.name, unitfile.to_properties(area.text))
        since = time.time(), time.monotonic()
        result = await job
        # From here on the unit exists (even a failed one stays loaded and
        # blocks the name), so every exit path must tear it down.
        undo.push_async_callback(_rollback, systemd, spec)
        if result != "done":
            raise OperationFailed(await _explain(systemd, area.name, result, *since))
        try:
            content.populate(spec)
        except OSError as error:
            raise OperationFailed(f"cannot prepare {spec.area}: {error.strerror}: {error.filename}") from error
        await _run(systemd, overlay.name, systemd.start_transient_unit(overlay.name, unitfile.to_properties(overlay.text)))
        undo.pop_all()
    return await find(systemd, spec.name)


async def _rollback(systemd: Systemd, spec: OverlaySpec) -> None:
    problems = await teardown(systemd, spec)
    if problems:
        raise OperationFailed("rollback incomplete: " + "; ".join(problems))


async def remove(systemd: Systemd, name: str) -> OverlaySpec:
    status = await find(systemd, name)
    problems = await teardown(systemd, status.spec)
    if problems:
        raise OperationFailed(f"cannot remove overlay {name!r}: " + "; ".join(problems))
    return status.spec


async def reset(systemd: Systemd, name: str) -> OverlayStatus:
    """Throw away what was written to NAME since apply, keep its applied content."""
    status = await find(systemd, name)
    spec = status.spec
    if spec.read_only:
        return status  # nothing can have been written
    # ignore-dependencies: the area unit is PartOf= the overlay; a plain stop
    # would take the area, and the applied content in it, down too.
    await _run(systemd, spec.overlay_unit, systemd.stop_unit(spec.overlay_unit, "ignore-dependencies"))
    if _our_overlay_mounted(spec):
        raise OperationFailed(f"cannot reset overlay {name!r}: {spec.target} is still mounted")
    try:
        content.recreate_writable_layers(spec)
    except OSError as error:
        raise OperationFailed(f"cannot reset overlay {name!r}: {error.strerror}: {error.filename}") from error
    await _run(systemd, spec.overlay_unit, systemd.start_unit(spec.overlay_unit))
    return await find(systemd, name)
