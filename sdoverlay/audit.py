"""The audit trail: one structured journal entry per apply, reset, remove, refusal or failure.

Each event kind has a fixed MESSAGE_ID (see systemd/sdoverlay.catalog), so
`journalctl MESSAGE_ID=...` finds them; `sdoverlay log` reads them back.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import sys

from systemd import journal

from sdoverlay.errors import PermissionDenied
from sdoverlay.events import MESSAGE_IDS, PRIORITIES

_EVENTS_BY_ID = {message_id: event for event, message_id in MESSAGE_IDS.items()}


@dataclasses.dataclass(frozen=True)
class Event:
    event: str  # a key of MESSAGE_IDS
    verb: str  # the command that caused it: apply, unlock, reset, remove
    name: str
    target: str
    source: str
    owner_uid: int
    session: str
    result: str  # "ok", or the one-line reason
    # Who asked (the service writes every entry, so _UID is always root's).
    caller_uid: int | None = None


def record(event: Event) -> None:
    """Write EVENT to the journal; a journal that cannot be reached is said on stderr."""
    summary = f"sdoverlay {event.verb} {event.name or '-'}"
    message = f"{summary}: {event.event}" if event.result == "ok" else f"{summary}: {event.event}: {event.result}"
    try:
        journal.send(
            message,
            MESSAGE_ID=MESSAGE_IDS[event.event],
            PRIORITY=str(PRIORITIES[event.event]),
            SYSLOG_IDENTIFIER="sdoverlay",
            SDOVERLAY_EVENT=event.event,
            SDOVERLAY_VERB=event.verb,
            SDOVERLAY_NAME=event.name,
            SDOVERLAY_TARGET=event.target,
            SDOVERLAY_SOURCE=event.source,
            SDOVERLAY_OWNER_UID=str(event.owner_uid),
            SDOVERLAY_SESSION=event.session,
            SDOVERLAY_RESULT=event.result,
            **({"SDOVERLAY_CALLER_UID": str(event.caller_uid)} if event.caller_uid is not None else {}),
        )
    except OSError as error:
        print(f"sdoverlay: warning: cannot write the audit entry to the journal: {error}", file=sys.stderr)


# Where journald keeps the system journal: persistent, else volatile.
SYSTEM_JOURNALS = ("/var/log/journal", "/run/log/journal")
# journald's own tmpfiles.d (systemd.conf) grant these groups read access.
JOURNAL_GROUPS = "systemd-journal, adm or wheel"


def _system_journal_files() -> list[str]:
    found = []
    for root in SYSTEM_JOURNALS:
        try:
            machines = os.listdir(root)
        except OSError:
            continue
        for machine in machines:
            try:
                found += [f"{root}/{machine}/{entry}" for entry in os.listdir(f"{root}/{machine}")
                          if entry.startswith("system") and entry.endswith(".journal")]
            except OSError:
                continue
    return found


def check_readable() -> None:
    """Refuse to answer "no events" where the events are there, in a system
    journal this user may not read: the service writes every audit entry,
    so none of them is in the user's own journal. sd-journal opens what it
    can and skips the rest without a word."""
    if os.geteuid() == 0:
        return
    files = _system_journal_files()
    if files and not any(os.access(path, os.R_OK) for path in files):
        raise PermissionDenied(f"cannot show sdoverlay's events: the system journal is not readable for uid "
                               f"{os.getuid()}: only root and the groups {JOURNAL_GROUPS} may read it "
                               "(journalctl says the same)")


def read(name: str | None = None) -> list[dict[str, object]]:
    """The audit history, oldest first, optionally of one overlay name."""
    reader = journal.Reader()
    for message_id in MESSAGE_IDS.values():
        reader.add_match(MESSAGE_ID=message_id)  # same field: any of them
    if name is not None:
        reader.add_match(SDOVERLAY_NAME=name)  # another field: and
    history = []
    for entry in reader:
        timestamp = entry["__REALTIME_TIMESTAMP"].astimezone(datetime.timezone.utc)
        history.append({
            "time": timestamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "event": _EVENTS_BY_ID.get(str(entry.get("MESSAGE_ID", "")).replace("-", ""), "unknown"),
            "verb": entry.get("SDOVERLAY_VERB", ""),
            "name": entry.get("SDOVERLAY_NAME", ""),
            "target": entry.get("SDOVERLAY_TARGET", ""),
            "source": entry.get("SDOVERLAY_SOURCE", ""),
            "owner_uid": _int_or_none(entry.get("SDOVERLAY_OWNER_UID")),
            "session": entry.get("SDOVERLAY_SESSION", ""),
            "result": entry.get("SDOVERLAY_RESULT", ""),
            "caller_uid": _int_or_none(entry.get("SDOVERLAY_CALLER_UID", entry.get("_UID"))),
        })
    return history


def _int_or_none(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None
