"""sdoverlay's D-Bus traffic with systemd (PID 1) over dbus-next's asyncio bus:
the reads of sdoverlay.unitqueries, and the calls that create jobs.

Every job is waited for the race-free way systemd's own tools do it
(src/shared/bus-wait-for-jobs.c): the JobRemoved match is in place before
the method that creates the job is called, and the job path it returns is
then looked up among the signals seen so far or awaited.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from sdoverlay.dbusnext import BusType, DBusError, Message, MessageBus, MessageType, asyncio
from sdoverlay.errors import NotFound, OperationFailed
from sdoverlay.paths import TRANSIENT_UNITS_DIR
from sdoverlay.unitqueries import CALL_TIMEOUT, MANAGER, MANAGER_PATH, PROPERTIES, SYSTEMD, SystemdQueries

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

# How long a job may run before sdoverlay stops waiting and says so (systemd's
# own job and unit timeouts, 90 s for a mount, normally end it long before).
JOB_TIMEOUT = 300.0
# How often a job that sent no JobRemoved is looked at (is it still queued?).
JOB_POLL = 2.0


async def connect_system_bus(unix_fds: bool = False) -> MessageBus:
    """A dbus-next asyncio connection to the system bus, or OperationFailed
    in one line. UNIX_FDS: file descriptors can be passed."""
    try:
        return await asyncio.wait_for(MessageBus(bus_type=BusType.SYSTEM, negotiate_unix_fd=unix_fds).connect(),
                                      CALL_TIMEOUT)
    except (OSError, DBusError, TimeoutError) as error:
        raise OperationFailed(f"cannot connect to the system bus: {error or 'timed out'}") from error


# Less free than this in /run and a transient unit's file may not fit: a
# unit's file takes a page or two of tmpfs, and StartTransientUnit writes
# one per unit.
RUN_FULL_BYTES = 64 * 1024


def _run_full() -> str | None:
    """Why systemd could not write a transient unit to /run, if /run is full."""
    import os

    try:
        stats = os.statvfs(TRANSIENT_UNITS_DIR if os.path.isdir(TRANSIENT_UNITS_DIR) else "/run")
    except OSError:
        return None
    free = stats.f_bavail * stats.f_frsize
    if free < RUN_FULL_BYTES:
        return f"No space left on device in /run ({free} bytes free)"
    if stats.f_files and stats.f_favail == 0:
        return "No space left on device in /run (no free inodes)"
    return None


class Systemd(SystemdQueries):
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
        bus = await connect_system_bus(unix_fds)
        try:
            systemd = cls(bus)
            await systemd._call_bus("AddMatch", "s", [_JOB_REMOVED_MATCH])
            await systemd._call_bus("AddMatch", "s", [_SYSTEMD_OWNER_MATCH])
            yield systemd
        finally:
            bus.disconnect()

    async def _exchange(self, message: Message, timeout: float) -> Message | None:
        return await asyncio.wait_for(self._bus.call(message), timeout)

    async def pause(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

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
        try:
            return await self._run_job(
                "StartTransientUnit",
                "ssa(sv)a(sa(sv))",
                [name, "fail", properties, [[aux_name, aux_properties] for aux_name, aux_properties in aux]],
                f"cannot create {name}",
                name,
                "active",
                unix_fds,
            )
        except NotFound as error:
            # systemd writes each transient unit's file to /run/systemd/transient
            # first; when /run is full that fails, and the reply says only that
            # the unit (the first aux, or NAME) was "not found".
            full = _run_full()
            if full is None:
                raise
            raise OperationFailed(f"cannot create {name}: {full}") from error

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

