"""All of sdoverlay's D-Bus traffic with systemd (PID 1), through dbus-next.

Every job is waited for the race-free way systemd's own tools do it
(src/shared/bus-wait-for-jobs.c): the JobRemoved match is in place before
the method that creates the job is called, and the job path it returns is
then looked up among the signals seen so far or awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any


from sdoverlay.dbusnext import BusType, DBusError, Message, MessageBus, MessageType, Variant
from sdoverlay.errors import Conflict, NotFound, OperationFailed, PermissionDenied
from sdoverlay.record import record

SYSTEMD = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
PROPERTIES = "org.freedesktop.DBus.Properties"
UNIT = "org.freedesktop.systemd1.Unit"
MOUNT = "org.freedesktop.systemd1.Mount"
SERVICE = "org.freedesktop.systemd1.Service"

_JOB_REMOVED_MATCH = (
    f"type='signal',sender='{SYSTEMD}',path='{MANAGER_PATH}',"
    f"interface='{MANAGER}',member='JobRemoved'"
)
# As bus-wait-for-jobs.c does: know when PID 1 leaves the bus (daemon-reexec,
# or its API bus connection dropped), since then a JobRemoved can be lost.
_SYSTEMD_OWNER_MATCH = (
    "type='signal',sender='org.freedesktop.DBus',path='/org/freedesktop/DBus',"
    f"interface='org.freedesktop.DBus',member='NameOwnerChanged',arg0='{SYSTEMD}'"
)

# Every call is bounded: sd-bus' default method timeout.
CALL_TIMEOUT = 25.0
# How long a job may run before sdoverlay stops waiting and says so (systemd's
# own job and unit timeouts, 90 s for a mount, normally end it long before).
JOB_TIMEOUT = 300.0
# How often a job that sent no JobRemoved is looked at (is it still queued?).
JOB_POLL = 2.0

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


class Systemd:
    """A connection to PID 1 on the system bus."""

    def __init__(self, bus: MessageBus) -> None:
        self._bus = bus
        self._job_results: dict[str, str] = {}
        self._job_waiters: dict[str, asyncio.Future[str]] = {}
        # Set whenever PID 1 leaves or rejoins the bus: job waiters look at their jobs then.
        self._owner_changed = asyncio.Event()
        bus.add_message_handler(self._on_message)

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, unix_fds: bool = False) -> AsyncIterator[Systemd]:
        """UNIX_FDS: file descriptors can be passed (a transient unit's stdio)."""
        try:
            bus = await asyncio.wait_for(MessageBus(bus_type=BusType.SYSTEM, negotiate_unix_fd=unix_fds).connect(),
                                         CALL_TIMEOUT)
        except (OSError, DBusError, asyncio.TimeoutError) as error:
            raise OperationFailed(f"cannot connect to the system bus: {error or 'timed out'}") from error
        try:
            systemd = cls(bus)
            await systemd._call_bus("AddMatch", "s", [_JOB_REMOVED_MATCH])
            await systemd._call_bus("AddMatch", "s", [_SYSTEMD_OWNER_MATCH])
            yield systemd
        finally:
            bus.disconnect()

    def _on_message(self, message: Message) -> None:
        if message.message_type != MessageType.SIGNAL:
            return
        if message.interface == MANAGER and message.member == "JobRemoved":
            _job_id, job_path, _unit, result = message.body
            self._job_results[job_path] = result
            waiter = self._job_waiters.pop(job_path, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(result)
        elif message.member == "NameOwnerChanged" and message.body and message.body[0] == SYSTEMD:
            self._owner_changed.set()

    async def _send(self, message: Message, action: str, timeout: float = CALL_TIMEOUT, retry: bool = False) -> list[Any]:
        """Call and return the reply's body; bounded by TIMEOUT. RETRY (only
        for calls that change nothing): while PID 1 is off the bus, as during
        a daemon-reexec, ask again until it is back or the time is up."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                reply = await asyncio.wait_for(self._bus.call(message), max(0.1, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise OperationFailed(f"{action}: no answer on the system bus within {timeout:.0f} s") from None
            except (OSError, EOFError) as error:
                raise OperationFailed(f"{action}: the system bus connection failed: {error}") from error
            if reply is None:
                raise OperationFailed(f"{action}: no reply on the system bus")
            if reply.message_type != MessageType.ERROR:
                return reply.body
            if retry and reply.error_name in _PID1_AWAY and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
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

    async def _run_job(self, member: str, signature: str, body: list[Any], action: str, unit: str, goal: str,
                       unix_fds: Sequence[int] = ()) -> str:
        """Call a job-creating method and return the job's result ('done' is success).

        GOAL ("active" or "inactive") is what UNIT's state is after a
        successful job: where the JobRemoved signal cannot come (PID 1 left
        the bus meanwhile, as seen once after 42 unlocks in a row: it ran the
        job and the CLI waited for ever), the result is read off the unit.
        """
        (job_path,) = await self._call_manager(member, signature, body, action, unix_fds)
        if job_path in self._job_results:
            return self._job_results.pop(job_path)
        waiter = asyncio.get_running_loop().create_future()
        self._job_waiters[job_path] = waiter
        deadline = time.monotonic() + JOB_TIMEOUT
        try:
            while True:
                self._owner_changed.clear()
                owner_changed = asyncio.ensure_future(self._owner_changed.wait())
                done, _ = await asyncio.wait({waiter, owner_changed}, timeout=JOB_POLL,
                                             return_when=asyncio.FIRST_COMPLETED)
                owner_changed.cancel()
                if waiter.done():
                    return waiter.result()
                if await self._job_gone(job_path, action):
                    # Gone without a JobRemoved that reached us: the unit says how it went.
                    if job_path in self._job_results:
                        return self._job_results[job_path]
                    return await self._result_from_state(unit, goal)
                if time.monotonic() > deadline:
                    raise OperationFailed(
                        f"{action}: job {job_path} still runs after {JOB_TIMEOUT:.0f} s; "
                        "sdoverlay stopped waiting (see 'systemctl list-jobs')"
                    )
        finally:
            self._job_waiters.pop(job_path, None)
            self._job_results.pop(job_path, None)

    async def _job_gone(self, job_path: str, action: str) -> bool:
        """Is the job object gone from PID 1? False while PID 1 is not on the bus."""
        message = Message(destination=SYSTEMD, path=job_path, interface=PROPERTIES, member="Get",
                          signature="ss", body=["org.freedesktop.systemd1.Job", "State"])
        try:
            await self._send(message, action, timeout=JOB_POLL * 2)
        except NotFound:
            return True
        except OperationFailed:
            return False  # PID 1 away (daemon-reexec) or slow: look again later
        return False

    async def _result_from_state(self, unit: str, goal: str) -> str:
        state = (await self.active_states([unit]))[unit]
        if state == goal or (goal == "inactive" and state == "failed"):
            return "done"
        return "failed"

    async def start_transient_unit(
        self, name: str, properties: list[list[Any]], aux: Sequence[tuple[str, list[list[Any]]]] = (),
        unix_fds: Sequence[int] = (),
    ) -> str:
        """Create and start unit NAME; AUX units are created with it, started
        only as dependencies. UNIX_FDS: the fds that "h" properties index."""
        # Mode "fail": never replace or cancel someone else's job on this unit.
        return await self._run_job(
            "StartTransientUnit",
            "ssa(sv)a(sa(sv))",
            [name, "fail", properties, [[aux_name, aux_properties] for aux_name, aux_properties in aux]],
            f"cannot create {name}",
            name,
            "active",
            unix_fds,
        )

    async def kill_unit(self, name: str, signal: int) -> None:
        """Send SIGNAL to every process of unit NAME."""
        await self._call_manager("KillUnit", "ssi", [name, "all", signal], f"cannot signal {name}")

    async def start_unit(self, name: str, mode: str = "replace") -> str:
        return await self._run_job("StartUnit", "ss", [name, mode], f"cannot start {name}", name, "active")

    async def stop_unit(self, name: str, mode: str = "replace") -> str:
        return await self._run_job("StopUnit", "ss", [name, mode], f"cannot stop {name}", name, "inactive")

    async def reset_failed_unit(self, name: str) -> None:
        await self._call_manager("ResetFailedUnit", "s", [name], f"cannot reset {name}")

    async def reload(self) -> None:
        """daemon-reload: re-run the generators and load units anew; returns when done.

        A reload with many units and generators can take longer than an
        ordinary call (systemctl waits up to its own default, 25 s, too)."""
        await self._send(
            Message(destination=SYSTEMD, path=MANAGER_PATH, interface=MANAGER, member="Reload"),
            "cannot reload systemd", timeout=JOB_TIMEOUT, retry=True,
        )

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
        return {unit[0]: UnitState(load=unit[2], active=unit[3], sub=unit[4]) for unit in units}

    async def units_by_name(self, names: list[str]) -> dict[str, UnitState]:
        """The states of NAMES, in one call, loaded or not ("not-found",
        "inactive" for a unit that does not exist)."""
        if not names:
            return {}
        (units,) = await self._call_manager(
            "ListUnitsByNames", "as", [names], "cannot look up units"
        )
        return {unit[0]: UnitState(load=unit[2], active=unit[3], sub=unit[4]) for unit in units}

    async def active_states(self, names: list[str]) -> dict[str, str]:
        """ActiveState of each of NAMES ("inactive" where there is no such unit)."""
        return {name: state.active for name, state in (await self.units_by_name(names)).items()}

    async def active_states_matching(self, patterns: list[str]) -> dict[str, str]:
        """ActiveState of every loaded unit matching PATTERNS, by name."""
        return {name: state.active for name, state in (await self.list_units(patterns)).items()}
