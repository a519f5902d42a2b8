"""What sdoverlay's audit records are: their MESSAGE_IDs and fields.

Kept apart from sdoverlay.audit (which writes and reads them through the
journal) so that the unit templates, and so the generator, can name the
fields without importing python-systemd.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself is not imported: see sdoverlay.record

if TYPE_CHECKING:
    from sdoverlay.spec import OverlaySpec

MESSAGE_IDS = {
    "applied": "3a8a135b4a5b4f5792bf7d6eaac70816",
    "reset": "325a79d6fdb24b88957c8bede9aebdfe",
    "removed": "e598ce37a4aa410fa7f84686973e347e",
    "refused": "b42aafb602eb45ada0e64f18c0956bc0",
    "failed": "d2bd8852215f47e5be59034077be1d0f",
    "persisted": "d8199e8f784648fba8e5eaa6ea507fb5",
    "detached": "c5ec40065a344e658dbf6c07a1d24df1",
    "collected": "40f0b8a52c3c4972977370c06f9a004d",
    "run": "33b3cd2ae18f4e07b66d873ab7549273",
    # Written by the overlay's own content unit, not by the CLI.
    "started": "6a2c0c2aceeb4769aa5a61c222951fa9",
    "stopped": "ed6dcf91a4ab48afb2b6652d8288ff52",
}
NOTICE, WARNING, ERR = 5, 4, 3
PRIORITIES = {"applied": NOTICE, "reset": NOTICE, "removed": NOTICE, "refused": WARNING, "failed": ERR,
              "persisted": NOTICE, "detached": WARNING, "collected": NOTICE, "run": NOTICE, "started": NOTICE,
              "stopped": NOTICE}
# The verb recorded for events that the units write themselves.
UNIT_VERB = "unit"


def overlay_fields(spec: OverlaySpec) -> dict[str, str]:
    """The SDOVERLAY_* fields that say which overlay a record is about."""
    return {
        "SDOVERLAY_NAME": spec.name,
        "SDOVERLAY_TARGET": spec.target,
        "SDOVERLAY_SOURCE": spec.source or "",
        "SDOVERLAY_OWNER_UID": str(spec.owner_uid),
        "SDOVERLAY_SESSION": spec.session,
    }


def unit_event_entry(spec: OverlaySpec, event: str) -> list[str]:
    """The journal entry (FIELD=VALUE lines, logger --journald's input) a
    unit of overlay SPEC writes when it starts or stops. The overlay's fields
    are in the entry itself: journald adds a unit's LogExtraFields= only when
    it can still look the sender up in /proc, and logger has often exited by
    then (a CI run lost a `started` record that way)."""
    return [
        f"MESSAGE=sdoverlay {UNIT_VERB} {spec.name}: {event}",
        f"MESSAGE_ID={MESSAGE_IDS[event]}",
        f"PRIORITY={PRIORITIES[event]}",
        "SYSLOG_IDENTIFIER=sdoverlay",
        f"SDOVERLAY_EVENT={event}",
        f"SDOVERLAY_VERB={UNIT_VERB}",
        "SDOVERLAY_RESULT=ok",
        *(f"{field}={value}" for field, value in overlay_fields(spec).items() if value),
    ]
