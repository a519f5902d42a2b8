"""How an overlay on a TARGET is mounted: by a .mount unit or a service, lazily or not."""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself is not imported: see sdoverlay.record

if TYPE_CHECKING:
    from typing import Any

from sdoverlay import unmounter


def mount_plan(target: str, target_taken: bool, private: bool = False) -> dict[str, Any]:
    """The spec fields `kind` and `lazy_unmount` for TARGET.

    TARGET_TAKEN: TARGET is a mount point already, or systemd has a unit of
    that path loaded. Then systemd owns TARGET's .mount unit
    (StartTransientUnit would fail with UnitExists), so a service mounts on
    top, and lazily, always: a service whose ExecStop= fails still goes
    down, leaving the overlay mounted and its area unbound.

    PRIVATE: a service too, whose mount is read-only from the moment it
    appears (sdoverlay.private), which a .mount unit cannot do.
    """
    if target_taken or private:
        return {"kind": "service", "lazy_unmount": True}
    return {"kind": "mount", "lazy_unmount": unmounter.needs_lazy_unmount(target)}
