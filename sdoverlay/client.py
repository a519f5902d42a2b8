"""The CLI's side of sdoverlay's D-Bus API: one call per changing verb.

Like systemctl, it allows interactive authorization on its calls and, on a
terminal, starts a polkit text agent (pkttyagent) first, so that polkit can
ask for a password; --no-ask-password turns both off.

The calls go over the CLI's blocking connection (sdoverlay.blocking: no
asyncio to import, ~25 ms of every command's start); `sdoverlay run`, which
passes file descriptors and forwards signals while it waits, over
dbus-next's asyncio bus. Both send the same messages and read the same
replies (_call_over).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from sdoverlay import api, blocking
from sdoverlay.dbuscodec import Message, MessageFlag, MessageType, Variant
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


async def _call_over(exchange: Callable[[Message, float | None], Awaitable[Message | None]], method: str,
                     body: list[Any], interactive: bool, unix_fds: list[int] | None = None,
                     timeout: float | None = CALL_TIMEOUT) -> Any:
    """METHOD's outcome (decoded JSON), its messages sent with EXCHANGE
    (a connection's send-and-wait-for-the-reply)."""
    signature, _ = api.METHODS[method]
    for attempt in range(ACTIVATION_TRIES):
        message = Message(destination=api.BUS_NAME, path=api.OBJECT_PATH, interface=api.INTERFACE,
                          member=method, signature=signature, body=body, unix_fds=unix_fds or [],
                          flags=MessageFlag.ALLOW_INTERACTIVE_AUTHORIZATION if interactive else MessageFlag.NONE)
        try:
            reply = await exchange(message, timeout)
        except TimeoutError:
            raise OperationFailed(f"sdoverlay's service did not answer within {timeout:.0f} s") from None
        except (OSError, EOFError) as error:
            raise OperationFailed(f"sdoverlay's service: the system bus connection failed: {error}") from error
        # The bus could not start the service, so the request never
        # reached it: safe to send again. Seen when PID 1 re-executed
        # while it was starting the service (daemon-reexec).
        if not (reply is not None and reply.message_type == MessageType.ERROR
                and reply.error_name in _ACTIVATION_ERRORS and attempt + 1 < ACTIVATION_TRIES):
            break
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


async def _run_over_asyncio(name: str, body: list[Any], interactive: bool) -> Any:
    """Run's call: its stdio passed as fds, and the CLI's signals passed on
    (SignalRun) while it waits, which takes an event loop."""
    from sdoverlay.bus import connect_system_bus
    from sdoverlay.dbusnext import asyncio

    bus = await connect_system_bus(unix_fds=True)

    def forward(number: int) -> None:
        signal = Message(destination=api.BUS_NAME, path=api.OBJECT_PATH, interface=api.INTERFACE,
                         member="SignalRun", signature=api.METHODS["SignalRun"][0], body=[name, int(number), {}])
        asyncio.ensure_future(bus.call(signal))

    async def exchange(message: Message, timeout: float | None) -> Message | None:
        return await asyncio.wait_for(bus.call(message), timeout)

    loop = asyncio.get_running_loop()
    for number in api.RUN_SIGNALS:
        loop.add_signal_handler(number, forward, number)
    try:
        return await _call_over(exchange, "Run", body, interactive, unix_fds=[0, 1, 2], timeout=None)
    finally:
        for number in api.RUN_SIGNALS:
            loop.remove_signal_handler(number)
        bus.disconnect()


def run(name: str, argv: list[str], options: dict[str, Variant], ask_password: bool) -> Any:
    """`sdoverlay run`: COMMAND (ARGV) in private overlay NAME, with this
    process's working dir, environment, stdin, stdout and stderr; returns
    when it exits. Ctrl-C and the like are passed on to it."""
    from sdoverlay.dbusnext import asyncio

    body = [name, argv, os.getcwd(), [f"{key}={value}" for key, value in os.environ.items()], 0, 1, 2, options]
    with polkit_agent(ask_password):
        return asyncio.run(_run_over_asyncio(name, body, ask_password))


class Interrupted(SdoverlayError):
    """Ctrl-C while the service works: it goes on (and audits the outcome)."""


def call(method: str, body: list[Any], ask_password: bool = True) -> Any:
    """Call METHOD of sdoverlay's service and return its outcome (decoded JSON)."""
    with polkit_agent(ask_password):
        try:
            with blocking.BlockingBus.connect() as bus:
                async def exchange(message: Message, timeout: float | None) -> Message:
                    return bus.exchange(message, timeout)

                return blocking.run(_call_over(exchange, method, body, ask_password))
        except KeyboardInterrupt:
            raise Interrupted(
                "interrupted: the service goes on with the request and finishes or rolls it back "
                "(see 'sdoverlay list' and 'sdoverlay log')"
            ) from None
