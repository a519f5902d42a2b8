"""systemd-style INI text: unit files, sdoverlay.conf, and overlay drop-ins."""

from __future__ import annotations

import os


def parse(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) for each assignment, in file order."""
    entries = []
    section = ""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"line {number}: not an assignment: {line!r}")
        entries.append((section, key.strip(), value.strip()))
    return entries


def layered_files(dirs: list[str], suffix: str) -> list[str]:
    """systemd's drop-in rule: one namespace of file names across DIRS, sorted
    by name; for each name the first dir in DIRS wins. A winner that is a
    symlink to /dev/null or an empty file masks the name (it is left out)."""
    chosen: dict[str, str] = {}
    for directory in dirs:
        try:
            names = os.listdir(directory)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for name in names:
            if name.endswith(suffix) and name not in chosen:
                chosen[name] = os.path.join(directory, name)
    return [chosen[name] for name in sorted(chosen) if not is_masked(chosen[name])]


def is_masked(path: str) -> bool:
    return os.path.realpath(path) == "/dev/null" or (os.path.isfile(path) and os.path.getsize(path) == 0)
