"""dbus-next and asyncio, imported without the parts sdoverlay never uses.

dbus_next imports its GLib backend (and so `gi`, when python3-gi is
installed) on `import dbus_next`, and asyncio imports `ssl`; both are
optional to them (they catch the ImportError). Together they were 13 of the
~110 ms a CLI call spent starting (issue 9). They are hidden only while
dbus_next and asyncio load: a later `import ssl` anywhere works as usual.
So sdoverlay's modules take asyncio from here: one plain `import asyncio`
before this module loads it brings ssl back (it did, unnoticed, until
tests/test_logic.py checked).
"""

from __future__ import annotations

import importlib
import sys

_HIDDEN = ("gi", "ssl")
_hidden_here = [name for name in _HIDDEN if name not in sys.modules]
for _name in _hidden_here:
    sys.modules[_name] = None  # type: ignore[assignment]  # makes `import NAME` raise ImportError
try:
    asyncio = importlib.import_module("asyncio")  # loaded here so that it, too, does without ssl
    from dbus_next import BusType, Message, MessageFlag, MessageType, Variant
    from dbus_next.aio import MessageBus
    from dbus_next.constants import RequestNameReply
    from dbus_next.errors import DBusError
finally:
    for _name in _hidden_here:
        del sys.modules[_name]

# Submodules sdoverlay.dbuscodec loaded before the package itself are in
# sys.modules but not attributes of it, as an import would have made them.
for _name, _module in list(sys.modules.items()):
    _parent, _, _child = _name.rpartition(".")
    if _parent == "dbus_next" and not hasattr(sys.modules[_parent], _child):
        setattr(sys.modules[_parent], _child, _module)

__all__ = ["asyncio", "BusType", "DBusError", "Message", "MessageBus", "MessageFlag", "MessageType", "RequestNameReply", "Variant"]
