"""systemd-style INI text: unit files, sdoverlay.conf, and overlay drop-ins."""

from __future__ import annotations

import os
import stat

# Far more than any drop-in or configuration file needs; a bound so that a
# link to /dev/zero or a huge file cannot make a reader (at boot, the
# generator) take unbounded time and memory.
MAX_FILE_BYTES = 64 * 1024


def read_regular_file(path: str, limit: int = MAX_FILE_BYTES) -> str:
    """The UTF-8 text of PATH, which must be a regular file of at most LIMIT bytes.

    Opened with O_NONBLOCK, so a FIFO does not block the open (a FIFO named
    x.conf made daemon-reload hang for 90 s, issue 7, item 2), and checked
    with fstat on the open file before anything is read: a FIFO, a device, a
    directory or an oversized file raises ValueError; a dangling link
    OSError; bad UTF-8 UnicodeDecodeError (a ValueError too).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"not a regular file ({_file_type(info.st_mode)})")
        if info.st_size > limit:
            raise ValueError(f"larger than {limit} bytes")
        data = b""
        while len(data) <= limit:
            chunk = os.read(fd, limit + 1 - len(data))
            if not chunk:
                break
            data += chunk
        if len(data) > limit:
            raise ValueError(f"larger than {limit} bytes")
    finally:
        os.close(fd)
    return data.decode("utf-8")


def _file_type(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def parse(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) for each assignment, in file order."""
    return [(section, key, value) for section, pairs in parse_sections(text) for key, value in pairs]


def parse_sections(text: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """(section, [(key, value), ...]) for each section header, in file order:
    a section named twice is two entries (a batch's [Overlay]s). Assignments
    before the first header are in a section named ""."""
    sections: list[tuple[str, list[tuple[str, str]]]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            sections.append((line[1:-1], []))
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"line {number}: not an assignment: {line!r}")
        if not sections:
            sections.append(("", []))
        sections[-1][1].append((key.strip(), value.strip()))
    return sections


def layered_files(dirs: list[str], suffix: str) -> list[str]:
    """systemd's drop-in rule: one namespace of file names across DIRS, sorted
    by name; for each name the first dir in DIRS wins. A winner that is a
    symlink to /dev/null or an empty file masks the name (it is left out).
    Hidden files (a name starting with '.') are not read, as systemd's
    conf_files_list() does not read them (and the installed generator's
    shell glob does not see them)."""
    chosen: dict[str, str] = {}
    for directory in dirs:
        try:
            names = os.listdir(directory)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for name in names:
            if name.endswith(suffix) and not name.startswith(".") and name not in chosen:
                chosen[name] = os.path.join(directory, name)
    return [chosen[name] for name in sorted(chosen) if not is_masked(chosen[name])]


def is_masked(path: str) -> bool:
    """A link to /dev/null or an empty regular file (stat only: nothing is opened)."""
    if os.path.realpath(path) == "/dev/null":
        return True
    try:
        info = os.stat(path)
    except OSError:
        return False  # a dangling link: not a mask; its reader says why it is skipped
    return stat.S_ISREG(info.st_mode) and info.st_size == 0
