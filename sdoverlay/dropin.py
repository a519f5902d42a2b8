"""The [Overlay] section of drop-ins (man:sdoverlay.d(5)), read by the
generator from /etc/sdoverlay.d and friends and by `apply --from FILE`:
one place for its keys and values."""

from __future__ import annotations

SECTION = "Overlay"
KEYS = {"Name", "Target", "Source", "ReadOnly", "Size", "Persistent", "KeepOwnership", "AllowSetuid",
        "AllowWorldWritable", "Private", "Image"}
# The boolean keys that are an overlay's options, by their names as
# OverlaySpec fields and the service's a{sv} options.
FLAGS = {"ReadOnly": "read_only", "KeepOwnership": "keep_ownership", "AllowSetuid": "allow_setuid",
         "AllowWorldWritable": "allow_world_writable", "Private": "private"}
_BOOLEANS = {"yes": True, "true": True, "on": True, "1": True, "no": False, "false": False, "off": False, "0": False}


class DropinError(Exception):
    pass


def boolean(values: dict[str, str], key: str) -> bool:
    """KEY's value as systemd reads booleans; no by default."""
    value = values.get(key, "no")
    try:
        return _BOOLEANS[value.lower()]
    except KeyError:
        raise DropinError(f"{key}={value} is not a boolean") from None


def flags(values: dict[str, str]) -> dict[str, bool]:
    """The FLAGS of VALUES by their field names; no where not given."""
    return {field: boolean(values, key) for key, field in FLAGS.items()}


def check(values: dict[str, str]) -> None:
    """The rules between keys that every [Overlay] follows, wherever it is read."""
    read_only = boolean(values, "ReadOnly")
    if "Target" not in values:
        raise DropinError("Target= is missing")
    if read_only and not values.get("Source"):
        raise DropinError("ReadOnly=yes needs a Source=")
    if boolean(values, "Private") and read_only:
        raise DropinError("Private=yes and ReadOnly=yes exclude each other")


def values(entries: list[tuple[str, str, str]]) -> dict[str, str]:
    """KEY -> value of (section, key, value) ENTRIES, all of [Overlay]; a
    later assignment wins, as in unit files."""
    found: dict[str, str] = {}
    for section, key, value in entries:
        if section != SECTION:
            raise DropinError(f"unknown section [{section}]; use [{SECTION}]")
        if key not in KEYS:
            raise DropinError(f"unknown key {key}=")
        found[key] = value
    return found
