"""Unit-file text to StartTransientUnit properties.

Only the keys our templates use are known; any other key is an error, so a
template cannot grow a setting that the transient path silently drops.
"""

from __future__ import annotations

import shlex

from sdoverlay.dbusnext import Variant
from sdoverlay.ini import parse

# D-Bus signature of each property, as in systemd's src/core/dbus-unit.c,
# dbus-mount.c and dbus-execute.c.
PROPERTY_SIGNATURES: dict[str, str] = {
    "Description": "s",
    "After": "as",
    "Before": "as",
    "BindsTo": "as",
    "Conflicts": "as",
    "PartOf": "as",
    "Requires": "as",
    "RequiresMountsFor": "as",
    "Wants": "as",
    "DefaultDependencies": "b",
    "StartLimitIntervalUSec": "t",
    "StopWhenUnneeded": "b",
    "What": "s",
    "Where": "s",
    "Type": "s",
    "Options": "s",
    "LazyUnmount": "b",
    "RemainAfterExit": "b",
    "SyslogIdentifier": "s",
    "ExecStart": "a(sasb)",
    "ExecStop": "a(sasb)",
    "ExecStartPost": "a(sasb)",
    "ExecStopPost": "a(sasb)",
    "LogExtraFields": "aay",
}


def _unescape_specifiers(value: str) -> str:
    # Templates write '%%' for '%'; transient properties are not expanded.
    if "%" in value.replace("%%", ""):
        raise ValueError(f"unit specifiers are not used by sdoverlay templates: {value!r}")
    return value.replace("%%", "%")


def _boolean(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("yes", "true", "on", "1"):
        return True
    if lowered in ("no", "false", "off", "0"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _exec_command(value: str) -> list[object]:
    ignore_failure = value.startswith("-")
    argv = shlex.split(value.lstrip("-"))
    return [argv[0], argv, ignore_failure]  # dbus-next marshals structs from lists


# List settings systemd reads with extract_first_word(UNQUOTE): quoted words,
# as sdoverlay.units.word_quote writes them. Unit dependencies are read with
# RETAIN_ESCAPE instead: "\x2d" in a unit name stays as it is.
_QUOTED_LISTS = {"RequiresMountsFor", "LogExtraFields"}


def _words(key: str, value: str) -> list[str]:
    return shlex.split(value) if key in _QUOTED_LISTS else value.split()


# Unit-file keys whose D-Bus property has another name and unit (seconds -> µs).
_SECONDS_AS_USEC = {"StartLimitIntervalSec": "StartLimitIntervalUSec"}


def to_properties(text: str) -> list[list[object]]:
    """The (name, Variant) list StartTransientUnit takes for this unit file."""
    merged: dict[str, object] = {}
    lists: dict[str, list[object]] = {}  # the multi-valued keys, assignments added up
    for _section, key, raw in parse(text):
        if key in _SECONDS_AS_USEC:
            if not raw.isdigit():
                raise ValueError(f"{key}= takes whole seconds in sdoverlay templates: {raw!r}")
            merged[_SECONDS_AS_USEC[key]] = int(raw) * 1_000_000
            continue
        signature = PROPERTY_SIGNATURES.get(key)
        if signature is None:
            raise ValueError(f"unit key {key}= has no transient property mapping")
        value = _unescape_specifiers(raw)
        if signature == "s":
            merged[key] = value
        elif signature == "b":
            merged[key] = _boolean(value)
        elif signature == "as":
            merged[key] = lists.setdefault(key, [])
            lists[key].extend(_words(key, value))
        elif signature == "aay":
            merged[key] = lists.setdefault(key, [])
            lists[key].extend(word.encode() for word in _words(key, value))
        elif signature == "a(sasb)":
            merged[key] = lists.setdefault(key, [])
            lists[key].append(_exec_command(value))
    return [[key, Variant(PROPERTY_SIGNATURES[key], value)] for key, value in merged.items()]
