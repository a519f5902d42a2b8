"""`sdoverlay gc`, and the leftovers of one name that `remove` clears.

Only what provably belongs to no overlay is removed: the host-wide lock is
held (sdoverlay.lock), so nothing found half-done is in the middle of being
done; it was left by a command that was killed, or by an overlay that was
stopped or unmounted behind sdoverlay's back. A live overlay is never
touched. State under /var/lib/sdoverlay that no drop-in names may hold
someone's writes: it is reported, and removed only when asked.
"""

from __future__ import annotations

import dataclasses
import os
import shutil

from sdoverlay import mountinfo, paths, persistence
from sdoverlay import status as status_module
from sdoverlay.bus import Systemd
from sdoverlay.spec import CONTENT_TEMPLATE_PREFIX
from sdoverlay.status import OverlayStatus

_HELPER_SUFFIXES = ("-content.service", "-hold.service", "-detached.service", ".service")
_UNIT_PATTERNS = ["usroverlay-*.service", "run-usroverlay-*.mount"]


@dataclasses.dataclass(frozen=True)
class Finding:
    kind: str  # unit, dir, partial, dropin, state, interrupted
    what: str  # a unit name or a path
    name: str  # the overlay name it is about
    reason: str
    removable: bool  # False: reported only

    def to_json(self, action: str) -> dict[str, str]:
        return {"kind": self.kind, "what": self.what, "name": self.name, "reason": self.reason, "action": action}


def overlay_name_of_unit(unit: str) -> str | None:
    """The overlay NAME in usroverlay-NAME[-content|-hold|-detached].service,
    usroverlay-content@NAME.service (a drop-in's content unit) or in its
    area's mount unit (where a '-' of NAME is escaped)."""
    if unit.endswith(".mount"):
        return paths.name_of_area_unit(unit)
    if unit.startswith(CONTENT_TEMPLATE_PREFIX) and unit.endswith(".service"):
        name = unit[len(CONTENT_TEMPLATE_PREFIX):-len(".service")]
        return name if paths.check_name(name) is None else None
    if unit.startswith("usroverlay-"):
        for suffix in _HELPER_SUFFIXES:
            if unit.endswith(suffix):
                return unit[len("usroverlay-"):-len(suffix)]
    return None


async def find(systemd: Systemd, only_name: str | None = None, include_state: bool = True) -> list[Finding]:
    """Everything of sdoverlay's that belongs to no overlay (of ONLY_NAME, if given)."""
    listed: dict[str, OverlayStatus] = {status.spec.name: status for status in await status_module.list_all(systemd)}
    found: list[Finding] = []

    def wanted(name: str | None) -> bool:
        return name is not None and (only_name is None or name == only_name)

    for unit, state in sorted((await systemd.active_states_matching(_UNIT_PATTERNS)).items()):
        name = overlay_name_of_unit(unit)
        if not wanted(name):
            continue
        status = listed.get(name)  # type: ignore[arg-type]
        if unit.endswith("-hold.service") and state == "active" and status is not None:
            if status.state in ("active", "degraded", "hidden"):
                found.append(Finding("unit", unit, name, "a hold left by a killed reset or persist; the overlay is up", True))
            else:
                found.append(Finding("interrupted", unit, name,
                                     f"overlay {name!r} is down after an interrupted reset or persist; "
                                     f"'sdoverlay reset {name}' brings it up, 'sdoverlay remove {name}' removes it", False))
        elif state == "failed" and (status is None or unit in status.spec.helper_units):
            found.append(Finding("unit", unit, name, "failed, and no live overlay needs it", True))
    mounts = mountinfo.read()
    try:
        entries = sorted(os.listdir(paths.AREA_ROOT))
    except FileNotFoundError:
        entries = []
    for entry in entries:
        area = f"{paths.AREA_ROOT}/{entry}"
        if not wanted(entry) or mountinfo.is_mount_point(area, mounts) or not os.path.isdir(area):
            continue
        if os.listdir(area):
            found.append(Finding("dir", area, entry, "not mounted, but not empty: left alone", False))
        else:
            found.append(Finding("dir", area, entry, "an area dir with nothing mounted on it", True))
    found += _persistent_leftovers(listed, wanted, include_state)
    return found


def _persistent_leftovers(listed: dict[str, OverlayStatus], wanted, include_state: bool) -> list[Finding]:
    found: list[Finding] = []
    try:
        entries = sorted(os.listdir(paths.PERSISTENT_ROOT))
    except FileNotFoundError:
        return found
    for entry in entries:
        path = f"{paths.PERSISTENT_ROOT}/{entry}"
        partial_of = persistence.partial_name(entry)
        if partial_of is not None:
            if wanted(partial_of):
                found.append(Finding("partial", path, partial_of, "a partial copy left by a killed persist", True))
            continue
        if not wanted(entry) or not include_state:
            continue
        status = listed.get(entry)
        if status is not None and status.spec.persistent:
            continue
        if persistence.dropin_for(entry) is not None:
            continue  # its drop-in brings it up at boot (or on the next daemon-reload)
        found.append(Finding("state", path, entry,
                             "persistent state that no drop-in names; it may hold someone's writes", False))
    return found


async def remove(systemd: Systemd, finding: Finding) -> None:
    if finding.kind == "unit":
        if (await systemd.active_states([finding.what]))[finding.what] == "failed":
            await systemd.reset_failed_unit(finding.what)
        else:
            await systemd.stop_unit(finding.what)
    elif finding.kind == "dir":
        os.rmdir(finding.what)
    elif finding.kind in ("partial", "state"):
        shutil.rmtree(finding.what)
