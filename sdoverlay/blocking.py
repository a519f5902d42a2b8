"""The CLI's reads of systemd over a blocking socket: no asyncio, no event loop.

`list`, `status` and name completion only read (sdoverlay.unitqueries), one
call after the other; asyncio and the rest of dbus-next were about 30 of the
~85 ms `sdoverlay list` took (issue 9, benchmarks/README.md). This is the
little of a bus connection such reads need: the system bus' address, the
EXTERNAL authentication sd-bus and dbus-next use, Hello, and a reply read per
call (dbus-next's codec, sdoverlay.dbuscodec). The queries are the same
coroutines the service awaits; here they never suspend, and `run` drives one
to its end without an event loop.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time

from sdoverlay.dbuscodec import Message, MessageType, Unmarshaller
from sdoverlay.errors import OperationFailed
from sdoverlay.unitqueries import CALL_TIMEOUT, SystemdQueries

TYPE_CHECKING = False  # typing is not imported at run time (sdoverlay.record)
if TYPE_CHECKING:
    from collections.abc import Coroutine, Iterator
    from typing import Any, TypeVar

    T = TypeVar("T")

# The system bus' address when DBUS_SYSTEM_BUS_ADDRESS does not say (the D-Bus specification).
DEFAULT_SYSTEM_BUS = "unix:path=/run/dbus/system_bus_socket"


def system_bus_path(address: str | None = None) -> str:
    """The socket of the system bus: the first unix:path= of its address.
    Other transports (abstract sockets, tcp) are not for a system bus."""
    address = address if address is not None else os.environ.get("DBUS_SYSTEM_BUS_ADDRESS", DEFAULT_SYSTEM_BUS)
    for entry in address.split(";"):
        transport, _, options = entry.partition(":")
        if transport != "unix":
            continue
        for option in options.split(","):
            key, _, value = option.partition("=")
            if key == "path" and value:
                return _unescape_address_value(value)
    raise OperationFailed(f"cannot connect to the system bus: no unix:path= in its address {address!r}")


def _unescape_address_value(value: str) -> str:
    # The specification's escaping of address values: %XX for any byte.
    first, *escaped = value.split("%")
    data = bytearray(first.encode())
    for piece in escaped:
        data += bytes([int(piece[:2], 16)]) + piece[2:].encode()
    return data.decode("utf-8", "surrogateescape")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that never suspends (one awaiting only a
    BlockingSystemd's calls), without an event loop."""
    try:
        coroutine.send(None)
    except StopIteration as finished:
        return finished.value
    coroutine.close()
    raise RuntimeError("a blocking D-Bus query waited for an event loop")


class BlockingSystemd(SystemdQueries):
    """A blocking connection to the system bus, for reading from systemd."""

    def __init__(self, connection: socket.socket) -> None:
        self._socket = connection
        self._reader = connection.makefile("rb")
        self._serial = 0

    @classmethod
    @contextlib.contextmanager
    def connect(cls) -> Iterator[BlockingSystemd]:
        path = system_bus_path()
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            connection.settimeout(CALL_TIMEOUT)
            try:
                connection.connect(path)
                systemd = cls(connection)
                systemd._authenticate()
            except (OSError, EOFError) as error:
                raise OperationFailed(f"cannot connect to the system bus: {error or 'timed out'}") from error
            run(systemd._call_bus("Hello", "", []))
            yield systemd
        finally:
            connection.close()

    def _authenticate(self) -> None:
        """EXTERNAL, as uid; BEGIN sent with it (as sd-bus does), so the
        first call follows without waiting for the bus to answer."""
        uid = str(os.geteuid()).encode().hex()
        self._socket.sendall(f"\0AUTH EXTERNAL {uid}\r\nBEGIN\r\n".encode())
        answer = self._reader.readline()
        if not answer.startswith(b"OK "):
            raise EOFError(f"the bus refused authentication: {answer.decode(errors='replace').strip()!r}")

    async def _exchange(self, message: Message, timeout: float) -> Message | None:
        self._serial += 1
        message.serial = self._serial
        self._socket.settimeout(timeout)
        self._socket.sendall(message._marshall())
        while True:
            reply = Unmarshaller(self._reader).unmarshall()
            if reply is None:
                raise EOFError("the system bus closed the connection")
            if reply.message_type in (MessageType.METHOD_RETURN, MessageType.ERROR) \
                    and reply.reply_serial == message.serial:
                return reply
            # Anything else (NameAcquired after Hello) is not ours to answer.

    async def pause(self, seconds: float) -> None:
        time.sleep(seconds)
