"""The CLI's side of sdoverlay's D-Bus API: one call per changing verb.

Like systemctl, it allows interactive authorization on its calls and, on a
terminal, starts a polkit text agent (pkttyagent) first, so that polkit can
ask for a password; --no-ask-password turns both off.
"""

from __future__ import annotations

from sdoverlay.dbusnext import asyncio  # without ssl: see there
import contextlib
import json
import os
import select
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any


from sdoverlay.dbusnext import BusType, DBusError, Message, MessageBus, MessageFlag, MessageType, Variant
from sdoverlay import api
from sdoverlay.errors import OperationFailed, SdoverlayError

# Longer than any one verb takes, the wait for the lock and a password included.
CALL_TIMEOUT = 600.0
_AGENT_READY_SECONDS = 5.0
ACTIVATION_TRIES = 3
_ACTIVATION_ERRORS = {
    "org.freedesktop.DBus.Error.TimedOut",  # "Failed to activate service ...: timed out"
    "org.freedesktop.systemd1.UnitFailed",
    "org.freedesktop.DBus.Error.Spawn.Failed",
    "org.freedesktop.DBus.Error.Spawn.ChildExited",
}


class ServiceError(SdoverlayError):
    """An error the service answered with: it has audited it already."""

    def __init__(self, error: SdoverlayError) -> None:
        super().__init__(error.message)
        self.exit_code = error.exit_code


def options(**values: Any) -> dict[str, Variant]:
    """A method's a{sv} options; None values are left out."""
    kinds = {bool: "b", str: "s", int: "u"}
    return {key: Variant(kinds[type(value)], value) for key, value in values.items() if value is not None}


@contextlib.contextmanager
def polkit_agent(ask_password: bool) -> Iterator[None]:
    """pkttyagent for this process while the call runs, as systemctl's
    polkit_agent_open() does: only on a terminal, not for root, and only
    once it has said it is ready (it closes the notify fd)."""
    agent = shutil.which("pkttyagent")
    if not ask_password or agent is None or os.geteuid() == 0 or not sys.stdin.isatty():
        yield
        return
    reader, writer = os.pipe()
    process = subprocess.Popen(
        [agent, "--notify-fd", str(writer), "--fallback", "--process", str(os.getpid())], pass_fds=[writer])
    os.close(writer)
    try:
        select.select([reader], [], [], _AGENT_READY_SECONDS)
        os.close(reader)
        yield
    finally:
        process.terminate()
        process.wait()


async def _call(method: str, body: list[Any], interactive: bool, unix_fds: list[int] | None = None,
                timeout: float | None = CALL_TIMEOUT, forward_signals_of_run: str | None = None) -> Any:
    signature, _ = api.METHODS[method]
    try:
        bus = await asyncio.wait_for(MessageBus(bus_type=BusType.SYSTEM, negotiate_unix_fd=bool(unix_fds)).connect(),
                                     25.0)
    except (OSError, DBusError, asyncio.TimeoutError) as error:
        raise OperationFailed(f"cannot connect to the system bus: {error or 'timed out'}") from error
    loop = asyncio.get_running_loop()
    if forward_signals_of_run is not None:
        for number in api.RUN_SIGNALS:
            loop.add_signal_handler(number, _forward, bus, forward_signals_of_run, number)
    try:
        for attempt in range(ACTIVATION_TRIES):
            message = Message(destination=api.BUS_NAME, path=api.OBJECT_PATH, interface=api.INTERFACE,
                              member=method, signature=signature, body=body, unix_fds=unix_fds or [],
                              flags=MessageFlag.ALLOW_INTERACTIVE_AUTHORIZATION if interactive else MessageFlag.NONE)
            try:
                reply = await asyncio.wait_for(bus.call(message), timeout)
            except asyncio.TimeoutError:
                raise OperationFailed(f"sdoverlay's service did not answer within {timeout:.0f} s") from None
            # The bus could not start the service, so the request never
            # reached it: safe to send again. Seen when PID 1 re-executed
            # while it was starting the service (daemon-reexec).
            if not (reply is not None and reply.message_type == MessageType.ERROR
                    and reply.error_name in _ACTIVATION_ERRORS and attempt + 1 < ACTIVATION_TRIES):
                break
    finally:
        if forward_signals_of_run is not None:
            for number in api.RUN_SIGNALS:
                loop.remove_signal_handler(number)
        bus.disconnect()
    if reply is None:
        raise OperationFailed("sdoverlay's service sent no reply")
    if reply.message_type == MessageType.ERROR:
        text = reply.body[0] if reply.body else reply.error_name or ""
        ours = api.error_from(reply.error_name or "", text)
        if ours is not None:
            raise ServiceError(ours)
        if reply.error_name in ("org.freedesktop.DBus.Error.ServiceUnknown",
                                "org.freedesktop.DBus.Error.Spawn.ServiceNotFound"):
            raise OperationFailed(f"sdoverlay's service {api.BUS_NAME} is not installed ({text}); "
                                  "see the README, 'Install'")
        raise OperationFailed(f"sdoverlay's service failed: {reply.error_name}: {text}")
    return json.loads(reply.body[0])


def _forward(bus: MessageBus, name: str, number: int) -> None:
    message = Message(destination=api.BUS_NAME, path=api.OBJECT_PATH, interface=api.INTERFACE, member="SignalRun",
                      signature=api.METHODS["SignalRun"][0], body=[name, int(number), {}])
    asyncio.ensure_future(bus.call(message))


def run(name: str, argv: list[str], options: dict[str, Variant], ask_password: bool) -> Any:
    """`sdoverlay run`: COMMAND (ARGV) in private overlay NAME, with this
    process's working dir, environment, stdin, stdout and stderr; returns
    when it exits. Ctrl-C and the like are passed on to it."""
    body = [name, argv, os.getcwd(), [f"{key}={value}" for key, value in os.environ.items()], 0, 1, 2, options]
    with polkit_agent(ask_password):
        return asyncio.run(_call("Run", body, ask_password, unix_fds=[0, 1, 2], timeout=None,
                                 forward_signals_of_run=name))


class Interrupted(SdoverlayError):
    """Ctrl-C while the service works: it goes on (and audits the outcome)."""


def call(method: str, body: list[Any], ask_password: bool = True) -> Any:
    """Call METHOD of sdoverlay's service and return its outcome (decoded JSON)."""
    with polkit_agent(ask_password):
        try:
            return asyncio.run(_call(method, body, ask_password))
        except KeyboardInterrupt:
            raise Interrupted(
                "interrupted: the service goes on with the request and finishes or rolls it back "
                "(see 'sdoverlay list' and 'sdoverlay log')"
            ) from None
