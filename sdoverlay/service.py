"""`python3 -m sdoverlay.service`: sdoverlay's privileged D-Bus service.

Built the way systemd's own hostnamed and timedated are (and udisks2):
activated on the system bus on first use (Type=dbus, BusName=), it does the
privileged work of every verb that changes overlays, for any caller, and
exits after IDLE_SECONDS without a request. It decides who may do what
itself, per request: the caller's uid and pid come from the bus
(GetConnectionUnixUser, GetConnectionUnixProcessID), never from the caller;
polkit is asked for the project's own actions (systemd/org.sdoverlay.policy),
with interactive authorization where the call allows it; root needs no
polkit, as in systemd's bus-polkit.c. Every check is in sdoverlay.verbs.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any

from sdoverlay import api, identity, verbs
from sdoverlay.bus import Systemd
from sdoverlay.dbusnext import (  # asyncio without ssl: see there
    BusType, DBusError, Message, MessageBus, MessageFlag, MessageType, RequestNameReply, Variant, asyncio,
)
from sdoverlay.errors import OperationFailed, PermissionDenied, as_sdoverlay_error

IDLE_SECONDS = float(os.environ.get("SDOVERLAY_IDLE_SECONDS", "30"))  # hostnamed's DEFAULT_EXIT_USEC
# A polkit agent may wait for a password for this long.
INTERACTIVE_AUTH_SECONDS = 300.0
POLKIT = "org.freedesktop.PolicyKit1"
POLKIT_PATH = "/org/freedesktop/PolicyKit1/Authority"
POLKIT_AUTHORITY = "org.freedesktop.PolicyKit1.Authority"
_POLKIT_ALLOW_USER_INTERACTION = 1
_DBUS = {"destination": "org.freedesktop.DBus", "path": "/org/freedesktop/DBus", "interface": "org.freedesktop.DBus"}


def _unwrap(options: dict[str, Variant]) -> dict[str, Any]:
    return {key: value.value for key, value in options.items()}


class Service:
    def __init__(self, bus: MessageBus, systemd: Systemd) -> None:
        self._bus = bus
        self._systemd = systemd
        self._in_flight = 0
        self._last_request = time.monotonic()
        self._stopping = False

    # -- the bus side --------------------------------------------------------

    def on_message(self, message: Message) -> Message | bool:
        if message.message_type != MessageType.METHOD_CALL or message.path != api.OBJECT_PATH:
            return False
        if message.interface == "org.freedesktop.DBus.Introspectable" and message.member == "Introspect":
            return Message.new_method_return(message, "s", [api.introspection_xml()])
        if message.interface == "org.freedesktop.DBus.Peer" and message.member == "Ping":
            return Message.new_method_return(message)
        if message.interface == "org.freedesktop.DBus.Peer" and message.member == "GetMachineId":
            with open("/etc/machine-id", encoding="ascii") as file:
                return Message.new_method_return(message, "s", [file.read().strip()])
        if message.interface == api.INTERFACE and message.member in api.METHODS:
            signature, _ = api.METHODS[message.member]
            if message.signature != signature:
                return Message.new_error(message, "org.freedesktop.DBus.Error.InvalidArgs",
                                         f"{message.member} takes ({signature}), not ({message.signature})")
            self._in_flight += 1
            asyncio.ensure_future(self._answer(message))
            return True
        return Message.new_error(message, "org.freedesktop.DBus.Error.UnknownMethod",
                                 f"no method {message.member} on {message.interface}")

    async def _answer(self, message: Message) -> None:
        try:
            outcome = await self._dispatch(message)
            reply = Message.new_method_return(message, "s", [json.dumps(outcome)])
        except BaseException as raised:  # noqa: BLE001 - every failure is one line to the caller
            error = as_sdoverlay_error(raised)
            reply = Message.new_error(message, api.error_name(error), error.message)
        finally:
            for descriptor in message.unix_fds:  # a run's stdio: the unit has its own copies by now
                os.close(descriptor)
            self._in_flight -= 1
            self._last_request = time.monotonic()
        self._bus.send(reply)

    async def _call_bus(self, member: str, signature: str, body: list[Any], timeout: float = 25.0) -> list[Any]:
        reply = await asyncio.wait_for(
            self._bus.call(Message(member=member, signature=signature, body=body, **_DBUS)), timeout)
        if reply is None or reply.message_type == MessageType.ERROR:
            text = reply.body[0] if reply is not None and reply.body else ""
            raise OperationFailed(f"D-Bus {member}: {text or (reply.error_name if reply else 'no reply')}")
        return reply.body

    async def _caller(self, message: Message, options: dict[str, Any]) -> verbs.Caller:
        (uid,) = await self._call_bus("GetConnectionUnixUser", "s", [message.sender])
        (pid,) = await self._call_bus("GetConnectionUnixProcessID", "s", [message.sender])
        try:
            with open(f"/proc/{pid}/cgroup", encoding="utf-8") as file:
                session = identity.session_id(file.read())
        except OSError:
            session = ""
        on_behalf_of = options.get("on_behalf_of")
        return verbs.Caller(uid=uid, pid=pid, session=session,
                            on_behalf_of=int(on_behalf_of) if on_behalf_of is not None else None,
                            bus_name=message.sender)

    def _authorizer(self, message: Message, caller: verbs.Caller) -> verbs.Authorize:
        interactive = bool(message.flags & MessageFlag.ALLOW_INTERACTIVE_AUTHORIZATION)

        async def authorize(action: str, details: dict[str, str]) -> None:
            if caller.uid == 0:
                return  # root may do anything, as in systemd's bus-polkit.c
            subject = ["system-bus-name", {"name": Variant("s", message.sender)}]
            flags = _POLKIT_ALLOW_USER_INTERACTION if interactive else 0
            request = Message(destination=POLKIT, path=POLKIT_PATH, interface=POLKIT_AUTHORITY,
                              member="CheckAuthorization", signature="(sa{sv})sa{ss}us",
                              body=[subject, action, details, flags, ""])
            timeout = INTERACTIVE_AUTH_SECONDS if interactive else 25.0
            try:
                reply = await asyncio.wait_for(self._bus.call(request), timeout)
            except asyncio.TimeoutError:
                raise PermissionDenied(f"polkit did not decide on {action} within {timeout:.0f} s") from None
            if reply is None or reply.message_type == MessageType.ERROR:
                text = reply.body[0] if reply is not None and reply.body else "no reply"
                raise PermissionDenied(f"cannot ask polkit about {action}: {text}")
            authorized, challenge, _details = reply.body[0]
            if not authorized:
                how = ("authentication is required and no polkit agent answered "
                       "(run it on a terminal, without --no-ask-password)") if challenge else "not allowed"
                raise PermissionDenied(f"uid {caller.uid} may not do this: polkit action {action}: {how}")

        return authorize

    async def _dispatch(self, message: Message) -> Any:
        _, names = api.METHODS[message.member]
        args = dict(zip(names, message.body))
        options = _unwrap(args.get("options", {}))
        caller = await self._caller(message, options)
        authorize = self._authorizer(message, caller)
        force = bool(options.get("force", False))
        systemd = self._systemd
        if message.member == "Apply":
            return await verbs.create(systemd, caller, authorize, "apply", args["name"], args["target"],
                                      args["source"], options)
        if message.member == "Unlock":
            return await verbs.create(systemd, caller, authorize, "unlock", args["name"], args["target"], None,
                                      options)
        if message.member == "ApplyBatch":
            return await verbs.create_batch(systemd, caller, authorize, args["dropin_text"], options)
        if message.member == "Reset":
            return await verbs.reset(systemd, caller, authorize, args["name"], force)
        if message.member == "Remove":
            return await verbs.remove(systemd, caller, authorize, args["name"], force)
        if message.member == "Run":
            stdio = [message.unix_fds[args[which]] for which in ("stdin", "stdout", "stderr")]
            return await verbs.run(systemd, caller, authorize, args["name"], list(args["argv"]), args["cwd"],
                                   list(args["environment"]), stdio, force)
        if message.member == "SignalRun":
            return await verbs.signal_run(systemd, caller, args["name"], int(args["signal"]))
        if message.member == "Diff":
            return await verbs.diff(systemd, caller, authorize, args["name"], force)
        if message.member == "Persist":
            return await verbs.persist(systemd, caller, authorize, args["name"], force,
                                       bool(options.get("rebase", False)))
        return await verbs.collect_garbage(systemd, caller, authorize, bool(options.get("dry_run", False)),
                                           bool(options.get("remove_orphaned_state", False)))

    # -- lifetime ------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def stopping(self) -> bool:
        return self._stopping

    def stop_when_idle(self) -> None:
        """SIGTERM: finish what is in flight, then exit (nothing half-done)."""
        self._stopping = True

    async def run_until_idle(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            if self.in_flight:
                continue
            if self._stopping or time.monotonic() - self._last_request >= IDLE_SECONDS:
                return


async def serve() -> int:
    try:
        # unix fds: a run's stdin, stdout and stderr come with its request.
        bus = await MessageBus(bus_type=BusType.SYSTEM, negotiate_unix_fd=True).connect()
    except OSError as error:
        print(f"sdoverlay-service: cannot connect to the system bus: {error}", file=sys.stderr)
        return 1
    async with Systemd.connect(unix_fds=True) as systemd:
        service = Service(bus, systemd)
        bus.add_message_handler(service.on_message)
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, service.stop_when_idle)
        if await bus.request_name(api.BUS_NAME) not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
            print(f"sdoverlay-service: {api.BUS_NAME} is owned by another process", file=sys.stderr)
            return 1
        await service.run_until_idle()
        # Give the name up before the last requests could queue behind an exit:
        # a caller arriving now activates a new instance. Bounded: at shutdown
        # the bus may be gone already, and a call to it would never return.
        if not service.stopping:
            try:
                await asyncio.wait_for(bus.release_name(api.BUS_NAME), 2.0)
            except (asyncio.TimeoutError, DBusError, OSError, EOFError):
                pass
        while service.in_flight:  # one that slipped in meanwhile
            await asyncio.sleep(0.05)
    bus.disconnect()
    return 0


def main() -> int:
    return asyncio.run(serve())


if __name__ == "__main__":
    sys.exit(main())
