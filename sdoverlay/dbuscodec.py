"""dbus-next's message codec alone, for the CLI's blocking reads (sdoverlay.blocking).

`import dbus_next` runs the package's __init__, which imports its asyncio
and GLib buses, introspection (xml.etree) and address parsing (urllib);
with asyncio that was about 30 of the ~85 ms `sdoverlay list` took (issue
9). The codec (Message, its marshalling, the Unmarshaller) needs none of
them, so here the package's modules are loaded under a bare package object
that stands in for dbus_next while they load. They stay in sys.modules:
a later `import dbus_next` (the service, sdoverlay.dbusnext) runs the real
__init__, which finds and uses these same modules, so a Message or Variant
is the same class either way.
"""

from __future__ import annotations

import sys
from importlib.machinery import PathFinder

_PACKAGE = "dbus_next"


def _load() -> None:
    if _PACKAGE in sys.modules:
        return  # the whole package is loaded (or loading): nothing to spare
    found = PathFinder.find_spec(_PACKAGE)
    if found is None or found.submodule_search_locations is None:
        raise ImportError("dbus_next is not installed (python3-dbus-next)")
    stand_in = type(sys)(_PACKAGE)
    stand_in.__path__ = list(found.submodule_search_locations)
    sys.modules[_PACKAGE] = stand_in
    try:
        # errors first, as dbus_next/__init__ has it: errors imports .message last
        for module in ("errors", "message", "_private.unmarshaller"):
            __import__(f"{_PACKAGE}.{module}")
    finally:
        del sys.modules[_PACKAGE]


_load()

from dbus_next._private.unmarshaller import Unmarshaller  # noqa: E402
from dbus_next.constants import MessageFlag, MessageType  # noqa: E402
from dbus_next.message import Message  # noqa: E402
from dbus_next.signature import Variant  # noqa: E402

__all__ = ["Message", "MessageFlag", "MessageType", "Unmarshaller", "Variant"]
