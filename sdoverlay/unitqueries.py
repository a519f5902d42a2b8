"""What sdoverlay reads from systemd (PID 1), over either of its two buses.

The service talks to systemd over dbus-next's asyncio bus
(sdoverlay.bus.Systemd, which also waits for jobs). The CLI's reads
(`list`, `status`, completion) go over its blocking connection
(sdoverlay.blocking): asyncio and the rest of dbus-next were about 30 of
the ~85 ms `sdoverlay list` took (issue 9). Both build the same messages and
read the same replies here; each only says how a message is exchanged
(`_exchange`) and how to wait (`pause`).
"""

from __future__ import annotations

import time

from sdoverlay.dbuscodec import Message, MessageType, Variant
from sdoverlay.errors import Conflict, NotFound, OperationFailed, PermissionDenied
from sdoverlay.record import record

TYPE_CHECKING = False  # typing is not imported at run time (sdoverlay.record)
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

SYSTEMD = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
PROPERTIES = "org.freedesktop.DBus.Properties"
UNIT = "org.freedesktop.systemd1.Unit"
MOUNT = "org.freedesktop.systemd1.Mount"
SERVICE = "org.freedesktop.systemd1.Service"

# Every call is bounded: sd-bus' default method timeout.
CALL_TIMEOUT = 25.0

_PERMISSION_ERRORS = {
    "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired",
    "org.freedesktop.DBus.Error.AccessDenied",
    "org.freedesktop.DBus.Error.AuthFailed",
}


def _error_for(error_name: str, text: str, action: str) -> Exception:
    message = f"{action}: {text or error_name}"
    if error_name in _PERMISSION_ERRORS:
        return PermissionDenied(f"{action}: permission denied by systemd/polkit ({error_name}); run as root")
    if error_name == "org.freedesktop.systemd1.UnitExists":
        return Conflict(message)
    if error_name in ("org.freedesktop.systemd1.NoSuchUnit", "org.freedesktop.systemd1.NoSuchJob",
                      "org.freedesktop.DBus.Error.UnknownObject"):
        return NotFound(message)
    return OperationFailed(message)


# What the bus answers while PID 1 is not on it (daemon-reexec).
_PID1_AWAY = {
    "org.freedesktop.DBus.Error.NoReply",
    "org.freedesktop.DBus.Error.ServiceUnknown",
    "org.freedesktop.DBus.Error.NameHasNoOwner",
    "org.freedesktop.DBus.Error.Disconnected",
}
# Manager methods that are safe to ask again: they read, or (Reload) do the
# same thing twice. Never one that creates a job: a lost reply does not mean
# the job was not created.
_SAFE_TO_REPEAT = {"GetUnit", "LoadUnit", "ListUnitsByPatterns", "ListUnitsByNames", "Reload"}


def _copy(message: Message) -> Message:
    return Message(destination=message.destination, path=message.path, interface=message.interface,
                   member=message.member, signature=message.signature, body=message.body)


def _unwrap(value: Any) -> Any:
    if isinstance(value, Variant):
        return _unwrap(value.value)
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


@record  # not a dataclass: `list` imports this (sdoverlay.record)
class UnitState:
    load: str  # loaded, not-found, masked, ...
    active: str  # active, inactive, failed, activating, deactivating
    sub: str = ""  # the unit type's own state: running, exited, mounted, ...

    @property
    def exists(self) -> bool:
        """Is there such a unit (a file, a transient unit, or a mount the kernel has)?"""
        return self.load != "not-found" or self.active != "inactive"


def _states(units: list[list[Any]]) -> dict[str, UnitState]:
    """The (name, description, load, active, sub, ...) rows of systemd's ListUnits* replies."""
    return {unit[0]: UnitState(load=unit[2], active=unit[3], sub=unit[4]) for unit in units}


class SystemdQueries:
    """Calls to PID 1 and the bus, and every read sdoverlay makes of systemd."""

    async def _exchange(self, message: Message, timeout: float) -> Message | None:
        """Send MESSAGE and return its reply (None: the bus gave none).
        Raises TimeoutError after TIMEOUT seconds, OSError or EOFError when
        the connection fails."""
        raise NotImplementedError

    async def pause(self, seconds: float) -> None:
        raise NotImplementedError

    async def _send(self, message: Message, action: str, timeout: float = CALL_TIMEOUT, retry: bool = False) -> list[Any]:
        """Call and return the reply's body; bounded by TIMEOUT. RETRY (only
        for calls that change nothing): while PID 1 is off the bus, as during
        a daemon-reexec, ask again until it is back or the time is up."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                reply = await self._exchange(message, max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                raise OperationFailed(f"{action}: no answer on the system bus within {timeout:.0f} s") from None
            except (OSError, EOFError) as error:
                raise OperationFailed(f"{action}: the system bus connection failed: {error}") from error
            if reply is None:
                raise OperationFailed(f"{action}: no reply on the system bus")
            if reply.message_type != MessageType.ERROR:
                return reply.body
            if retry and reply.error_name in _PID1_AWAY and time.monotonic() < deadline:
                await self.pause(0.05)
                message = _copy(message)  # a message is sent once: a new serial
                continue
            text = reply.body[0] if reply.body else ""
            raise _error_for(reply.error_name or "", text, action)

    async def _call_bus(self, member: str, signature: str, body: list[Any]) -> list[Any]:
        return await self._send(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member=member,
                signature=signature,
                body=body,
            ),
            f"D-Bus {member}",
        )

    async def _call_manager(self, member: str, signature: str, body: list[Any], action: str,
                            unix_fds: Sequence[int] = ()) -> list[Any]:
        return await self._send(
            Message(
                destination=SYSTEMD,
                path=MANAGER_PATH,
                interface=MANAGER,
                member=member,
                signature=signature,
                body=body,
                unix_fds=list(unix_fds),
            ),
            action,
            retry=member in _SAFE_TO_REPEAT,
        )

    async def version(self) -> int:
        """systemd's major version ("252.39-1~deb12u2" -> 252)."""
        text = str(await self.unit_property(MANAGER_PATH, MANAGER, "Version"))
        digits = ""
        for char in text:
            if not char.isdigit():
                break
            digits += char
        return int(digits or 0)

    async def name_has_owner(self, name: str) -> bool:
        """Is NAME (a caller's unique name) still on the bus?"""
        (owned,) = await self._call_bus("NameHasOwner", "s", [name])
        return bool(owned)

    async def load_state(self, name: str) -> str:
        """LoadState of unit NAME, loading it if need be ("not-found" when there is no such unit)."""
        (path,) = await self._call_manager("LoadUnit", "s", [name], f"cannot load {name}")
        return str(await self.unit_property(path, UNIT, "LoadState"))

    async def unit_path(self, name: str) -> str | None:
        """The object path of a loaded unit, or None when systemd has not loaded it."""
        try:
            (path,) = await self._call_manager("GetUnit", "s", [name], f"cannot look up {name}")
        except NotFound:
            return None
        return path

    async def unit_property(self, path: str, interface: str, name: str) -> Any:
        """One property of a unit. Get, not GetAll: GetAll of the Mount
        interface is 261 properties, 1.9 ms of unpacking in dbus-next each."""
        (value,) = await self._send(
            Message(
                destination=SYSTEMD,
                path=path,
                interface=PROPERTIES,
                member="Get",
                signature="ss",
                body=[interface, name],
            ),
            f"cannot read {name} of {path}",
            retry=True,
        )
        return _unwrap(value)

    async def list_units(self, patterns: list[str], states: list[str] | None = None) -> dict[str, UnitState]:
        """Every loaded unit matching PATTERNS (and in one of STATES), in one call."""
        (units,) = await self._call_manager(
            "ListUnitsByPatterns", "asas", [states or [], patterns], "cannot list units"
        )
        return _states(units)

    async def units_by_name(self, names: list[str]) -> dict[str, UnitState]:
        """The states of NAMES, in one call, loaded or not ("not-found",
        "inactive" for a unit that does not exist)."""
        if not names:
            return {}
        (units,) = await self._call_manager(
            "ListUnitsByNames", "as", [names], "cannot look up units"
        )
        return _states(units)

    async def active_states(self, names: list[str]) -> dict[str, str]:
        """ActiveState of each of NAMES ("inactive" where there is no such unit)."""
        return {name: state.active for name, state in (await self.units_by_name(names)).items()}

    async def active_states_matching(self, patterns: list[str]) -> dict[str, str]:
        """ActiveState of every loaded unit matching PATTERNS, by name."""
        return {name: state.active for name, state in (await self.list_units(patterns)).items()}
