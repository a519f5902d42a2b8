"""Path rules: unit-name escaping, the per-overlay area layout, name checks, containment.

One place for each of these facts, shared by the CLI and (later) the generator.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not imported at run time (sdoverlay.record)
if TYPE_CHECKING:
    from typing import Any

AREA_ROOT = "/run/usroverlay"
PERSISTENT_ROOT = "/var/lib/sdoverlay"
# What `sdoverlay run` hands its transient unit (sdoverlay.private): root's only.
RUN_REQUESTS_DIR = "/run/sdoverlay-run"
# Where systemd has its system generators write units (man:systemd.generator(7)).
GENERATED_UNITS_DIR = "/run/systemd/generator"
# Where systemd keeps the unit files of transient units (man:systemd.unit(5),
# "Unit File Load Path"), written when StartTransientUnit creates them.
TRANSIENT_UNITS_DIR = "/run/systemd/transient"

# Sets of characters rather than `re` or `string`: the generator imports this,
# and re with enum was a quarter of its run (issue 9, benchmarks/README.md).
WORD_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
# Overlay names end up in unit names, in paths under AREA_ROOT and in mount
# options; this alphabet needs no quoting in any of them.
NAME_MAX = 64
_NAME_CHARS = WORD_CHARS | {"-"}

_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def percent_decode(text: str, errors: str = "replace") -> str:
    """TEXT with each %XX the byte XX, decoded as UTF-8 with ERRORS; a '%'
    not followed by two hex digits stays as it is. For sdoverlay's metadata
    values (sdoverlay.spec.quote_metadata) and D-Bus address values
    (sdoverlay.blocking), both escaped that way. Without urllib: the
    generator imports this (issue 9)."""
    if "%" not in text:
        return text
    raw = bytearray()
    index = 0
    while index < len(text):
        pair = text[index + 1:index + 3]
        if text[index] == "%" and len(pair) == 2 and _HEX_DIGITS.issuperset(pair):
            raw.append(int(pair, 16))
            index += 3
        else:
            raw += text[index].encode(errors="surrogateescape")
            index += 1
    return raw.decode(errors=errors)


# Between the SOURCEs of a layered overlay in an overlay's `source` (its
# metadata, a drop-in's Source=, the service's API), as between overlayfs'
# lower dirs: no SOURCE can contain one (_UNSAFE_PATH_CHARS).
SOURCE_SEPARATOR = ":"

# Characters that would need quoting in overlayfs' lowerdir= (':' separates
# layers, ',' separates options, '\\' escapes), in unit files ('%' starts a
# specifier) or in ExecStart= command lines (white space, quotes).
_UNSAFE_PATH_CHARS = set(":,\\%\"'") | set(" \t\n\r\x0b\x0c")  # string.whitespace

_UNIT_NAME_PLAIN = WORD_CHARS | {":", "."}


def check_name(name: str) -> str | None:
    """Return why NAME is not a valid overlay name, or None when it is."""
    if not (0 < len(name) <= NAME_MAX and name[0] != "-" and _NAME_CHARS.issuperset(name)):
        return "names are 1-64 characters of A-Z a-z 0-9 _ -, not starting with '-'"
    return None


def check_path_chars(path: str) -> str | None:
    """Return why PATH cannot be used in overlay mount options, or None."""
    bad = sorted({c for c in path if c in _UNSAFE_PATH_CHARS or not c.isprintable()})
    if bad:
        return "contains characters overlay mount options cannot carry: " + " ".join(repr(c) for c in bad)
    return None


# ASCII as escape_path writes it: one table lookup per character (list
# escapes thousands of paths at 500 overlays, issue 9).
_ESCAPE_ASCII = {code: "-" if chr(code) == "/" else chr(code) if chr(code) in _UNIT_NAME_PLAIN else f"\\x{code:02x}"
                 for code in range(128)}


def _is_normal(path: str) -> bool:
    """An absolute path without empty components ('//', a trailing '/' but
    "/"), as the kernel writes mount points: compared by string, such paths
    answer as their components do."""
    return path.startswith("/") and "//" not in path and (path == "/" or not path.endswith("/"))


def escape_path(path: str) -> str:
    """The unit-name form of PATH, as `systemd-escape --path` prints it.

    A mount unit must be named after its Where= path this way, or systemd
    refuses it with BadUnitSetting.
    """
    # A normal path (every one sdoverlay makes) is trimmed by slicing: list
    # escapes four paths an overlay (issue 9).
    trimmed = path[1:] if _is_normal(path) else "/".join(part for part in path.split("/") if part)
    if not trimmed:
        return "-"
    if trimmed.isascii() and trimmed[0] != ".":
        return trimmed.translate(_ESCAPE_ASCII)
    out = []
    for index, char in enumerate(trimmed):
        if char == "/":
            out.append("-")
        elif char in _UNIT_NAME_PLAIN and not (index == 0 and char == "."):
            out.append(char)
        else:
            out.extend(f"\\x{byte:02x}" for byte in char.encode())
    return "".join(out)


def mount_unit_name(path: str) -> str:
    return escape_path(path) + ".mount"


def persistent_dir(name: str) -> str:
    """Where a persistent overlay keeps its content and upper and work dirs."""
    return f"{PERSISTENT_ROOT}/{name}"


def area_dir(name: str) -> str:
    """The tmpfs holding one overlay's content, upper and work dirs."""
    return f"{AREA_ROOT}/{name}"


_AREA_UNIT_PREFIX = escape_path(AREA_ROOT) + "-"


def name_of_area_unit(unit: str) -> str | None:
    """The overlay name whose area's mount unit is UNIT (mount_unit_name of
    area_dir), or None if UNIT is no such unit of a valid name."""
    if not (unit.startswith(_AREA_UNIT_PREFIX) and unit.endswith(".mount")):
        return None
    escaped = unit[len(_AREA_UNIT_PREFIX):-len(".mount")]
    # Of a name's characters only '-' is escaped in a unit name (\x2d); a
    # bare '-' is a '/': the unit of a path below an area, not an area's.
    if "-" in escaped:
        return None
    name = escaped.replace("\\x2d", "-")
    return name if check_name(name) is None else None


def is_sdoverlay_layer(path: str) -> bool:
    """Is PATH inside an overlay area or in persistent storage, where
    sdoverlay keeps the layers of the overlays it mounts?"""
    return is_within(path, AREA_ROOT) or is_within(path, PERSISTENT_ROOT)


def is_within(path: str, parent: str) -> bool:
    """True when PATH is PARENT or lies below it, compared by path components.

    /usr/lib is not within /usr/lib64.
    """
    if _is_normal(path) and _is_normal(parent):
        # The common case, by string: a new overlay's checks compare its
        # target with every mount point, 641 with 300 overlays (issue 9).
        return path == parent or path.startswith(parent + "/") or parent == "/"
    path_parts = [p for p in path.split("/") if p]
    parent_parts = [p for p in parent.split("/") if p]
    return path_parts[: len(parent_parts)] == parent_parts


def overlaps(a: str, b: str) -> bool:
    """True when one path is the other or contains it."""
    return is_within(a, b) or is_within(b, a)


class TargetIndex:
    """Paths taken so far, each with a value, and `overlaps` answered by
    lookup rather than against each of them: the generator checks every
    drop-in's target against the earlier ones (with 50 drop-ins, 1,225
    comparisons were 5 ms of every boot). Components as in is_within."""

    def __init__(self) -> None:
        self._taken: dict[tuple[str, ...], Any] = {}
        self._above: dict[tuple[str, ...], Any] = {}  # every dir above a taken path

    @staticmethod
    def _parts(path: str) -> tuple[str, ...]:
        return tuple(part for part in path.split("/") if part)

    def overlapping(self, path: str) -> Any:
        """The value of a taken path that PATH overlaps, or None."""
        parts = self._parts(path)
        if parts in self._above:
            return self._above[parts]
        return next((self._taken[parts[:depth]] for depth in range(len(parts) + 1) if parts[:depth] in self._taken),
                    None)

    def add(self, path: str, value: Any) -> None:
        parts = self._parts(path)
        self._taken[parts] = value
        for depth in range(len(parts)):
            self._above.setdefault(parts[:depth], value)


def default_unlock_name(target: str) -> str:
    """The name `unlock` gives an overlay when none is given: /usr -> usr."""
    parts = [p for p in target.split("/") if p] or ["root"]
    name = "-".join("".join(c if c in WORD_CHARS else "_" for c in p) for p in parts)
    return name[:NAME_MAX]
