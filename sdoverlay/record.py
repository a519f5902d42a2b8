"""@record: an immutable record class (a namedtuple) written like a dataclass.

The generator runs on every boot and daemon-reload, and its start-up is
mostly imports: `dataclasses` (with `inspect`) cost it 17 ms, and
typing.NamedTuple (with `typing` and `contextlib`) 4 ms more, against 10 ms
for Python itself to start (issue 9; benchmarks/README.md). The modules
the generator uses declare their records with this instead.
"""

from __future__ import annotations

import collections


def record(cls: type) -> type:
    """CLS's annotated attributes become the fields of a namedtuple, in
    order, their values the defaults (which must come last); its methods and
    properties stay. Records compare, hash and _replace() like namedtuples."""
    fields = list(cls.__dict__.get("__annotations__", {}))
    defaults = [cls.__dict__[field] for field in fields if field in cls.__dict__]
    base = collections.namedtuple(cls.__name__, fields, defaults=defaults)  # type: ignore[misc]
    namespace = {key: value for key, value in cls.__dict__.items()
                 if key not in fields and key not in ("__dict__", "__weakref__", "__annotations__")}
    namespace["__slots__"] = ()
    made = type(cls.__name__, (base,), namespace)
    made.__annotations__ = cls.__dict__.get("__annotations__", {})
    return made
