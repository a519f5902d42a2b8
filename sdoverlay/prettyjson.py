"""json.dumps(value, indent=2), quicker for what `list --json` prints.

With an indent, Python's json module encodes in pure Python, call by call:
5.0 ms for 500 overlays' records, a fifth of what those 490 more overlays
add to `list --json` (issue 9, benchmarks/README.md). This writes a list of
flat records (values str, int, bool, None, or lists of those) with the C
string encoder, in 2.2 ms, and the same text; anything else goes to
json.dumps.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def dumps(value: Any) -> str:
    """json.dumps(VALUE, indent=2), character for character."""
    if type(value) is list and all(type(record) is dict for record in value):
        try:
            return _records(value)
        except TypeError:  # not flat: a nested dict, a float, a subclass
            pass
    return json.dumps(value, indent=2)


def _records(records: list[dict[Any, Any]]) -> str:
    if not records:
        return "[]"
    parts = []
    # Each key's '"key": ', encoded once: the records share their keys
    # (0.3 ms of 2.5 for 500 overlays' records).
    keys: dict[str, str] = {}
    for record in records:
        items = []
        for key, value in record.items():
            prefix = keys.get(key)
            if prefix is None:
                if type(key) is not str:
                    raise TypeError(key)  # json.dumps turns some into strings its own way
                prefix = keys[key] = encode_basestring_ascii(key) + ": "
            if type(value) is str:
                items.append(prefix + encode_basestring_ascii(value))
            elif type(value) is list:
                items.append(prefix + ("[\n      " + ",\n      ".join(map(_scalar, value)) + "\n    ]" if value else "[]"))
            else:
                items.append(prefix + _scalar(value))
        parts.append("  {\n    " + ",\n    ".join(items) + "\n  }" if items else "  {}")
    return "[\n" + ",\n".join(parts) + "\n]"


def _scalar(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return encode_basestring_ascii(value)
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return int.__repr__(value)
    raise TypeError(kind)  # float (json's own repr rules), str and int subclasses, containers
