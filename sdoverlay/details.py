"""Everything about one overlay, for `sdoverlay status NAME` (issue 10).

Read directly, like `list`: systemd's view of its units, the area's memory,
what was written, who uses TARGET, its drop-in and its last audit events.
What the caller may not read (a root area is mode 0700; other users'
processes) is null, not guessed.
"""

from __future__ import annotations

import os
import stat
from typing import Any

from sdoverlay import audit, holders
from sdoverlay.unitqueries import SystemdQueries
from sdoverlay.status import OverlayStatus, detached_holders, find, runs_of

EVENTS_SHOWN = 5


def _tree_usage(root: str) -> tuple[int, int] | None:
    """(bytes in tmpfs pages, entries) below ROOT; None if ROOT cannot be read."""
    if not os.access(root, os.R_OK | os.X_OK):
        return None
    total = entries = 0
    pending = [root]
    while pending:
        try:
            with os.scandir(pending.pop()) as listing:
                for entry in listing:
                    info = entry.stat(follow_symlinks=False)
                    total += info.st_blocks * 512
                    entries += 1
                    if stat.S_ISDIR(info.st_mode):
                        pending.append(entry.path)
        except OSError:
            return None
    return total, entries


async def details(systemd: SystemdQueries, name: str) -> dict[str, Any]:
    status: OverlayStatus = await find(systemd, name)
    spec = status.spec
    unit_names = [*spec.units, spec.hold_unit, spec.detached_unit]
    units = await systemd.units_by_name(unit_names)
    content = _tree_usage(spec.content_dir) if spec.source else (0, 0)
    upper = None if spec.read_only else _tree_usage(spec.upper_dir)
    if status.state == "detached":
        users = await detached_holders(systemd, spec)
    else:
        users = holders.holders({status.overlay_mount_id}) if status.overlay_mount_id is not None else []
    runs = await runs_of(systemd, name) if spec.private else []
    history = audit.read(name)
    return {
        **status.to_json(),
        "unit_states": [{"unit": unit, "load": units[unit].load, "active": units[unit].active}
                        for unit in unit_names if units[unit].exists],
        "content_bytes": content[0] if content else None,
        # Upper dir entries: files, dirs, links and whiteouts written (a
        # copied-up dir counts as one).
        "written_bytes": upper[0] if upper else (0 if spec.read_only else None),
        "changed_paths": upper[1] if upper else (0 if spec.read_only else None),
        # Those the caller may see: all, for root. A run's command is seen
        # by its unit (it uses the overlay from a mount namespace of its own).
        "used_by": [{"pid": user.pid, "command": user.command, "unit": None} for user in users] + runs,
        "events": history[-EVENTS_SHOWN:],
    }
