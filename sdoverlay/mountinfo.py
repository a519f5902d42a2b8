"""Reading /proc/self/mountinfo (read only: sdoverlay never mounts by itself)."""

from __future__ import annotations

import dataclasses
import re


@dataclasses.dataclass(frozen=True)
class MountEntry:
    mount_point: str
    fs_type: str
    source: str
    super_options: str


def _unescape(field: str) -> str:
    # The kernel writes space, tab, newline and backslash as octal escapes.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse(text: str) -> list[MountEntry]:
    entries = []
    for line in text.splitlines():
        fields = line.split(" ")
        separator = fields.index("-")
        entries.append(
            MountEntry(
                mount_point=_unescape(fields[4]),
                fs_type=fields[separator + 1],
                source=_unescape(fields[separator + 2]),
                super_options=fields[separator + 3] if len(fields) > separator + 3 else "",
            )
        )
    return entries


def read() -> list[MountEntry]:
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as file:
        return parse(file.read())


def is_mount_point(path: str, entries: list[MountEntry]) -> bool:
    return any(entry.mount_point == path for entry in entries)


def mounts_at(path: str, entries: list[MountEntry]) -> list[MountEntry]:
    return [entry for entry in entries if entry.mount_point == path]
