"""All of sdoverlay's D-Bus traffic with systemd (PID 1), through dbus-next.

Every job is waited for the race-free way systemd's own tools do it
(src/shared/bus-wait-for-jobs.c): the JobRemoved match is in place before
the method that creates the job is called, and the job path it returns is
then looked up among the signals seen so far or awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from dbus_next import BusType, Message, MessageType, Variant
from dbus_next.aio import MessageBus
from dbus_next.errors import DBusError

from sdoverlay.errors import Conflict, NotFound, OperationFailed, PermissionDenied

SYSTEMD = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
PROPERTIES = "org.freedesktop.DBus.Properties"
UNIT = "org.freedesktop.systemd1.Unit"

_JOB_REMOVED_MATCH = (
    f"type='signal',sender='{SYSTEMD}',path='{MANAGER_PATH}',"
    f"interface='{MANAGER}',member='JobRemoved'"
)

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
    if error_name == "org.freedesktop.systemd1.NoSuchUnit":
        return NotFound(message)
    return OperationFailed(message)


def _unwrap(value: Any) -> Any:
    if isinstance(value, Variant):
        return _unwrap(value.value)
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


class Systemd:
    """A connection to PID 1 on the system bus."""

    def __init__(self, bus: MessageBus) -> None:
        self._bus = bus
        self._job_results: dict[str, str] = {}
        self._job_waiters: dict[str, asyncio.Future[str]] = {}
        bus.add_message_handler(self._on_message)

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls) -> AsyncIterator[Systemd]:
        try:
            bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
        except (OSError, DBusError) as error:
            raise OperationFailed(f"cannot connect to the system bus: {error}") from error
        try:
            systemd = cls(bus)
            await systemd._call_bus("AddMatch", "s", [_JOB_REMOVED_MATCH])
            yield systemd
        finally:
            bus.disconnect()

    def _on_message(self, message: Message) -> None:
        if (
            message.message_type == MessageType.SIGNAL
            and message.interface == MANAGER
            and message.member == "JobRemoved"
        ):
            _job_id, job_path, _unit, result = message.body
            self._job_results[job_path] = result
            waiter = self._job_waiters.pop(job_path, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(result)

    async def _send(self, message: Message, action: str) -> list[Any]:
        reply = await self._bus.call(message)
        assert reply is not None
        if reply.message_type == MessageType.ERROR:
            text = reply.body[0] if reply.body else ""
            raise _error_for(reply.error_name or "", text, action)
        return reply.body

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

    async def _call_manager(self, member: str, signature: str, body: list[Any], action: str) -> list[Any]:
        return await self._send(
            Message(
                destination=SYSTEMD,
                path=MANAGER_PATH,
                interface=MANAGER,
                member=member,
                signature=signature,
                body=body,
            ),
            action,
        )

    async def _run_job(self, member: str, signature: str, body: list[Any], action: str) -> str:
        """Call a job-creating method and return the job's result ('done' is success)."""
        (job_path,) = await self._call_manager(member, signature, body, action)
        if job_path in self._job_results:
            return self._job_results.pop(job_path)
        waiter = asyncio.get_running_loop().create_future()
        self._job_waiters[job_path] = waiter
        result = await waiter
        self._job_results.pop(job_path, None)
        return result

    async def start_transient_unit(
        self, name: str, properties: list[list[Any]], aux: Sequence[tuple[str, list[list[Any]]]] = ()
    ) -> str:
        """Create and start unit NAME; AUX units are created with it, started only as dependencies."""
        # Mode "fail": never replace or cancel someone else's job on this unit.
        return await self._run_job(
            "StartTransientUnit",
            "ssa(sv)a(sa(sv))",
            [name, "fail", properties, [[aux_name, aux_properties] for aux_name, aux_properties in aux]],
            f"cannot create {name}",
        )

    async def start_unit(self, name: str, mode: str = "replace") -> str:
        return await self._run_job("StartUnit", "ss", [name, mode], f"cannot start {name}")

    async def stop_unit(self, name: str, mode: str = "replace") -> str:
        return await self._run_job("StopUnit", "ss", [name, mode], f"cannot stop {name}")

    async def reset_failed_unit(self, name: str) -> None:
        await self._call_manager("ResetFailedUnit", "s", [name], f"cannot reset {name}")

    async def reload(self) -> None:
        """daemon-reload: re-run the generators and load units anew; returns when done."""
        await self._call_manager("Reload", "", [], "cannot reload systemd")

    async def load_state(self, name: str) -> str:
        """LoadState of unit NAME, loading it if need be ("not-found" when there is no such unit)."""
        (path,) = await self._call_manager("LoadUnit", "s", [name], f"cannot load {name}")
        return (await self.unit_properties(path, UNIT))["LoadState"]

    async def unit_path(self, name: str) -> str | None:
        """The object path of a loaded unit, or None when systemd has not loaded it."""
        try:
            (path,) = await self._call_manager("GetUnit", "s", [name], f"cannot look up {name}")
        except NotFound:
            return None
        return path

    async def unit_properties(self, path: str, interface: str) -> dict[str, Any]:
        (props,) = await self._send(
            Message(
                destination=SYSTEMD,
                path=path,
                interface=PROPERTIES,
                member="GetAll",
                signature="s",
                body=[interface],
            ),
            f"cannot read properties of {path}",
        )
        return {key: _unwrap(value) for key, value in props.items()}

    async def list_unit_names(self, patterns: list[str]) -> list[str]:
        (units,) = await self._call_manager(
            "ListUnitsByPatterns", "asas", [[], patterns], "cannot list units"
        )
        return sorted(unit[0] for unit in units)
