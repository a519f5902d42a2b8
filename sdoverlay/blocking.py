"""The CLI's D-Bus connection: a blocking socket, no asyncio, no event loop.

The CLI makes one call after the other: its reads of systemd (`list`,
`status`, name completion: sdoverlay.unitqueries) and its requests to
sdoverlay's service (sdoverlay.client). asyncio and the rest of dbus-next
were about 30 of the ~85 ms `sdoverlay list` took (issue 9,
benchmarks/README.md). This is the little of a bus connection such calls
need: the system bus' address, the EXTERNAL authentication sd-bus and
dbus-next use, Hello, and a reply read per call (dbus-next's codec,
sdoverlay.dbuscodec). The queries are the same coroutines the service
awaits; here they never suspend, and `run` drives one to its end without
an event loop. Only `sdoverlay run` (signals passed on while it waits,
file descriptors) uses dbus-next's asyncio bus.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time

from sdoverlay import paths
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
                return paths.percent_decode(value, errors="surrogateescape")  # the specification's %XX
    raise OperationFailed(f"cannot connect to the system bus: no unix:path= in its address {address!r}")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that never suspends (one awaiting only a
    BlockingSystemd's calls), without an event loop."""
    try:
        coroutine.send(None)
    except StopIteration as finished:
        return finished.value
    coroutine.close()
    raise RuntimeError("a blocking D-Bus query waited for an event loop")


class BlockingBus:
    """A blocking connection to the system bus: one call at a time."""

    def __init__(self, connection: socket.socket) -> None:
        self._socket = connection
        self._reader = connection.makefile("rb")
        self._serial = 0

    @classmethod
    @contextlib.contextmanager
    def connect(cls) -> Iterator[BlockingBus]:
        path = system_bus_path()
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            try:
                connection.settimeout(CALL_TIMEOUT)
                connection.connect(path)
                bus = cls(connection)
                bus._authenticate()
                hello = bus.exchange(Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                                             interface="org.freedesktop.DBus", member="Hello"), CALL_TIMEOUT)
            except (OSError, EOFError) as error:
                raise OperationFailed(f"cannot connect to the system bus: {error or 'timed out'}") from error
            if hello.message_type == MessageType.ERROR:
                raise OperationFailed(f"cannot connect to the system bus: {hello.error_name}")
            yield bus
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

    def exchange(self, message: Message, timeout: float | None) -> Message:
        """Send MESSAGE, return its reply. TIMEOUT None: wait as long as it
        takes. Raises TimeoutError, OSError, EOFError (the bus hung up)."""
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


class BlockingSystemd(SystemdQueries):
    """Reads from systemd over a BlockingBus."""

    def __init__(self, bus: BlockingBus) -> None:
        self._bus = bus

    @classmethod
    @contextlib.contextmanager
    def connect(cls) -> Iterator[BlockingSystemd]:
        with BlockingBus.connect() as bus:
            yield cls(bus)

    async def _exchange(self, message: Message, timeout: float) -> Message | None:
        return self._bus.exchange(message, timeout)

    async def pause(self, seconds: float) -> None:
        time.sleep(seconds)
