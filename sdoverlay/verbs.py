"""The verbs that change overlays, as sdoverlay's service runs them for a caller.

Every check is made here, in the privileged service, for the caller the bus
names (issue 8): validation, allowed roots, content checks (SOURCE read with
the caller's rights), conflicts, quotas per caller, owner checks, and the
polkit action each request needs. Each verb runs under the host-wide lock
(sdoverlay.lock) from its first check to its last job, and is audited: its
outcome, or its refusal or failure, one line each.

Each verb returns a JSON-ready dict (or list) that the CLI prints.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from sdoverlay import (
    api,
    audit,
    batch,
    collect,
    config,
    content,
    holders,
    lock,
    mountinfo,
    overlays,
    paths,
    persistence,
    sizes,
    validate,
)
from sdoverlay.bus import Systemd
from sdoverlay.dbusnext import Variant
from sdoverlay.errors import (
    Conflict,
    ExitCode,
    InvalidInput,
    LimitExceeded,
    NotFound,
    OperationFailed,
    as_sdoverlay_error,
)
from sdoverlay.sizes import DEFAULT_SIZE
from sdoverlay.spec import SOURCE_SEPARATOR, OverlaySpec, run_unit_prefix
from sdoverlay import status as status_module
from sdoverlay.status import OverlayStatus, runs_of

# The polkit actions (systemd/org.sdoverlay.policy).
ACTION_CREATE = "org.sdoverlay.create"
# A non-root caller's overlay outside UserAllowedRoots=: where it makes them
# root (sdoverlay.config), so polkit asks for an administrator by default.
ACTION_CREATE_OUTSIDE_USER_ROOTS = "org.sdoverlay.create-outside-user-roots"
ACTION_CREATE_PERSISTENT = "org.sdoverlay.create-persistent"
ACTION_MANAGE_OTHERS = "org.sdoverlay.manage-others"
ACTION_ALLOW_SETUID = "org.sdoverlay.allow-setuid"
ACTION_COLLECT = "org.sdoverlay.collect-garbage"

# (action, details) -> None, or PermissionDenied: polkit, asked by the service.
Authorize = Callable[[str, dict[str, str]], Awaitable[None]]


@dataclasses.dataclass(frozen=True)
class Caller:
    """Who asked, as the bus says: never what the caller says of itself."""

    uid: int
    pid: int
    session: str  # the logind session of the caller's process, or ""
    # Whom a root caller acts for (SUDO_UID/PKEXEC_UID, passed on by the
    # CLI); honoured only when the caller is root.
    on_behalf_of: int | None = None
    # The caller's unique name on the bus: gone when its process is.
    bus_name: str = ""

    @property
    def owner_uid(self) -> int:
        if self.uid == 0 and self.on_behalf_of is not None:
            return self.on_behalf_of
        return self.uid


def _event(caller: Caller, kind: str, verb: str, result: str, name: str = "", target: str = "",
           source: str = "", owner_uid: int | None = None) -> audit.Event:
    return audit.Event(event=kind, verb=verb, name=name, target=target, source=source,
                       owner_uid=caller.owner_uid if owner_uid is None else owner_uid,
                       session=caller.session, result=result, caller_uid=caller.uid)


def _spec_event(caller: Caller, kind: str, verb: str, spec: OverlaySpec, result: str = "ok") -> audit.Event:
    return _event(caller, kind, verb, result, spec.name, spec.target, spec.source or "", spec.owner_uid)


async def audited(caller: Caller, verb: str, request: dict[str, str],
                  run: Callable[[], Awaitable[tuple[Any, list[audit.Event]]]]) -> Any:
    """Run a verb; record its events, or its refusal or failure, and re-raise that as an SdoverlayError."""
    try:
        outcome, events = await run()
    except BaseException as raised:  # noqa: BLE001 - every failure is one audited line
        error = as_sdoverlay_error(raised)
        kind = "failed" if error.exit_code == ExitCode.FAILED else "refused"
        audit.record(_event(caller, kind, verb, error.message, request.get("name", ""), request.get("target", ""),
                            request.get("source", "")))
        if error is raised or not isinstance(raised, Exception):
            raise
        raise error from raised
    for event in events:
        audit.record(event)
    return outcome


def _check_source(caller: Caller, source: str, size: str, allow_setuid: bool, allow_world_writable: bool) -> str:
    """SOURCE (each of several, joined by SOURCE_SEPARATOR) as the caller
    sees it: resolved, readable and scanned with the caller's rights (a
    root-only file in the caller's dir is refused, though the service could
    read it); the copy is made with them too (populate). The caller is the
    process the bus names: root under sudo, whom SUDO_UID makes no less
    root (it names the owner only). Together they must fit in SIZE."""
    sources = source.split(SOURCE_SEPARATOR)
    resolved, needed = [], 0
    for each in sources:
        path, found = content.as_user(caller.uid, _resolve_and_scan, each)
        validate.content(found, f"source {each}", allow_setuid, allow_world_writable)
        resolved.append(path)
        needed += found.bytes_needed
    limit = sizes.tmpfs_size_bytes(size)
    if needed > limit:
        what = "source " + source if len(sources) == 1 else "sources " + " ".join(sources)
        raise LimitExceeded(f"{what} need{'s' if len(sources) == 1 else ''} {needed} bytes, "
                            f"more than --size {size} ({limit} bytes)")
    return SOURCE_SEPARATOR.join(resolved)


def _resolve_and_scan(source: str) -> tuple[str, validate.Scan]:
    resolved = validate.source(source)
    return resolved, validate.scan(resolved)


@dataclasses.dataclass(frozen=True)
class CreateRequest:
    """An apply or unlock, checked as far as it can be outside the lock."""

    verb: str
    name: str
    target: str  # resolved
    source: str | None  # as given; resolved and scanned under the lock
    read_only: bool
    size: str
    hotfix: bool
    allow_setuid: bool
    allow_world_writable: bool
    keep_ownership: bool
    private: bool
    limits: config.Config
    # NAME was derived from TARGET (unlock without --name): one that a
    # detached overlay still holds is taken with a suffix.
    derived_name: bool = False


async def _checked_request(caller: Caller, authorize: Authorize, verb: str, name: str, target: str,
                           source: str | None, options: dict[str, Any]) -> CreateRequest:
    """Names, sizes, allowed roots and polkit: before the lock, so that a
    password prompt holds no one else up."""
    size = str(options.get("size", DEFAULT_SIZE))
    hotfix = bool(options.get("hotfix", False))
    allow_setuid = bool(options.get("allow_setuid", False))
    read_only = bool(options.get("read_only", False))
    private = bool(options.get("private", False))
    if private and read_only:
        raise InvalidInput("--private and --read-only exclude each other: a private overlay is writable for "
                           "'sdoverlay run' and read-only for everyone else")
    derived_name = verb == "unlock" and name == ""
    if not derived_name:
        validate.name(name)
    validate.size(size)
    limits = config.load()
    resolved_target = validate.target(target, limits.allowed_roots)
    if derived_name:
        name = paths.default_unlock_name(resolved_target)
    details = {"name": name, "target": resolved_target, "source": source or ""}
    outside = not any(paths.is_within(resolved_target, root) for root in limits.roots_for(caller.uid))
    # One action where one says it all, so that one password answers it.
    await authorize(ACTION_CREATE_PERSISTENT if hotfix else ACTION_CREATE_OUTSIDE_USER_ROOTS if outside
                    else ACTION_CREATE, details)
    if hotfix and outside:
        await authorize(ACTION_CREATE_OUTSIDE_USER_ROOTS, details)
    if allow_setuid:
        await authorize(ACTION_ALLOW_SETUID, details)
    return CreateRequest(verb=verb, name=name, target=resolved_target, source=source,
                         read_only=read_only, size=size, hotfix=hotfix, private=private,
                         allow_setuid=allow_setuid, allow_world_writable=bool(options.get("allow_world_writable", False)),
                         keep_ownership=bool(options.get("keep_ownership", False)), limits=limits,
                         derived_name=derived_name)


async def _create_locked(systemd: Systemd, caller: Caller, request: CreateRequest) -> OverlayStatus:
    """The rest of the checks and the overlay itself; the lock is held."""
    if request.derived_name:
        request = dataclasses.replace(request, name=await _free_derived_name(systemd, request.name))
    resolved_source = None
    if request.source is not None:
        resolved_source = _check_source(caller, request.source, request.size, request.allow_setuid,
                                        request.allow_world_writable)
    # One read of the mount table for both checks: it costs 2 ms with 300
    # overlays (641 mounts), and the lock keeps other sdoverlay requests out.
    mounts = mountinfo.read()
    await overlays.check_new(systemd, request.name, request.target, request.size, caller.owner_uid, request.limits,
                             mounts)
    spec = OverlaySpec(
        name=request.name, target=request.target, source=resolved_source, read_only=request.read_only,
        size=request.size, owner_uid=caller.owner_uid, created_at=overlays.now_iso(), session=caller.session,
        keep_ownership=request.keep_ownership, allow_setuid=request.allow_setuid,
        allow_world_writable=request.allow_world_writable,
        persistent=request.hotfix, dropin=persistence.dropin_path(request.name) if request.hotfix else "",
        private=request.private, reader_uid=caller.uid if caller.uid != caller.owner_uid else None,
        **(await overlays.mount_plan(systemd, request.target, mounts, request.private)),
    )
    return await (persistence.hotfix(systemd, spec) if request.hotfix else overlays.apply(systemd, spec))


async def _free_derived_name(systemd: Systemd, name: str) -> str:
    """NAME, or NAME-2, NAME-3, ... past those that detached overlays hold:
    a detached overlay keeps its area, and so its name, until its last
    holder exits, often the next reboot after an unlock of /usr."""
    detached = await status_module.detached_names(systemd)
    chosen, number = name, 1
    while chosen in detached:
        number += 1
        suffix = f"-{number}"
        chosen = name[:paths.NAME_MAX - len(suffix)] + suffix
    return chosen


async def create(systemd: Systemd, caller: Caller, authorize: Authorize, verb: str, name: str, target: str,
                 source: str | None, options: dict[str, Any]) -> dict[str, Any]:
    """apply and unlock (--hotfix). Nothing is created before every check passes."""
    request = {"name": name, "target": target, "source": source or ""}

    async def run() -> tuple[dict[str, Any], list[audit.Event]]:
        checked = await _checked_request(caller, authorize, verb, name, target, source, options)
        async with lock.held_async():
            status = await _create_locked(systemd, caller, checked)
        return status.to_json(), [_spec_event(caller, "applied", verb, status.spec)]

    return await audited(caller, verb, request, run)


async def create_batch(systemd: Systemd, caller: Caller, authorize: Authorize, text: str,
                       options: dict[str, Any]) -> list[dict[str, Any]]:
    """apply --from FILE: every [Overlay] of TEXT, or none. All are checked
    first; they are created one after another under one hold of the lock,
    and on the first failure those created are removed again."""

    async def run() -> tuple[list[dict[str, Any]], list[audit.Event]]:
        entries = batch.parse(text)
        checked = []
        for index, entry in enumerate(entries):
            try:
                checked.append(await _checked_request(caller, authorize, entry.verb, entry.name, entry.target,
                                                      entry.source, {**options, **entry.options}))
            except Exception as raised:  # noqa: BLE001 - said of which overlay, re-raised
                raise batch.in_batch(raised, index, entries, []) from raised
        created: list[OverlayStatus] = []
        async with lock.held_async():
            for index, request in enumerate(checked):
                try:
                    created.append(await _create_locked(systemd, caller, request))
                except BaseException as raised:  # noqa: BLE001 - rolled back, said of which overlay, re-raised
                    problems = []
                    for status in reversed(created):
                        try:
                            await overlays.remove(systemd, status.spec.name, caller.pid)
                        except Exception as error:  # noqa: BLE001 - named in the one line; gc finds the rest
                            problems.append(f"{status.spec.name}: {as_sdoverlay_error(error).message}")
                    if not isinstance(raised, Exception):
                        raise
                    raise batch.in_batch(raised, index, entries, [s.spec.name for s in created], problems) from raised
        return ([status.to_json() for status in created],
                [_spec_event(caller, "applied", request.verb, status.spec) for request, status in zip(checked, created)])

    return await audited(caller, "apply", {"name": "", "target": "", "source": "--from"}, run)


async def _owned(systemd: Systemd, caller: Caller, authorize: Authorize, name: str, force: bool,
                 verb: str) -> OverlayStatus:
    """Overlay NAME, if the caller may act on it: their own, or another's
    with --force and polkit's leave."""
    status = await overlays.find(systemd, name)
    overlays.check_owner(status, caller.owner_uid, force, verb)
    if status.spec.owner_uid != caller.uid and caller.uid != 0:
        await authorize(ACTION_MANAGE_OTHERS, {"name": name, "target": status.spec.target,
                                               "owner_uid": str(status.spec.owner_uid)})
    await overlays.check_not_detached(
        systemd, status, f"{verb} needs a live overlay, and {status.spec.target} is free for a new one")
    if status.state == "stale" and verb not in ("remove", "persist"):
        raise Conflict(f"overlay {name!r} is stale: {status.problem}")
    if status.state == "hidden":
        # Its unit's unmount would act on the path, which is no longer the
        # overlay's (systemd 252: "umount: /usr/share/doc: not mounted").
        raise Conflict(f"overlay {name!r} is {status.problem}; {verb} it once it is visible again")
    return status


async def _check_no_runs(systemd: Systemd, spec: OverlaySpec, verb: str) -> None:
    """A run's command writes to the private overlay from a namespace of
    its own: a holder like any other, which remove or reset would leave
    writing into an overlay that is gone or emptied."""
    if not spec.private:
        return
    runs = await runs_of(systemd, spec.name)
    if runs:
        held = ", ".join(f"{run['unit']} ({run['command'][:80]})" for run in runs)
        raise Conflict(f"overlay {spec.name!r} is in use by {held}; wait for it to end, or stop it "
                       f"(systemctl stop {runs[0]['unit']}), then {verb} it")


async def reset(systemd: Systemd, caller: Caller, authorize: Authorize, name: str, force: bool) -> dict[str, Any]:
    async def run() -> tuple[dict[str, Any], list[audit.Event]]:
        # Owner and polkit first, outside the lock: a password prompt must
        # not hold every other request up. The owner of a name never changes.
        owned = await _owned(systemd, caller, authorize, name, force, "reset")
        async with lock.held_async():
            await _check_no_runs(systemd, owned.spec, "reset")
            status = await overlays.reset(systemd, name)
        return status.to_json(), [_spec_event(caller, "reset", "reset", status.spec)]

    return await audited(caller, "reset", {"name": name}, run)


async def persist(systemd: Systemd, caller: Caller, authorize: Authorize, name: str, force: bool,
                  rebase: bool = False) -> dict[str, Any]:
    async def run() -> tuple[dict[str, Any], list[audit.Event]]:
        owned = None
        try:
            owned = await _owned(systemd, caller, authorize, name, force, "persist")
        except NotFound:
            if rebase:
                raise
            # persist finishes a killed persist whose transient overlay is gone, or says so
        stale = owned.spec if owned is not None and owned.state == "stale" else None
        if rebase and stale is None:
            raise Conflict(f"overlay {name!r} is not stale: --rebase lays a stale one over this image")
        if stale is not None and not rebase:
            raise Conflict(f"overlay {name!r} is stale: {owned.problem}")  # type: ignore[union-attr]
        await authorize(ACTION_CREATE_PERSISTENT, {"name": name})
        async with lock.held_async():
            status = await (persistence.rebase(systemd, stale) if stale is not None
                            else persistence.persist(systemd, name))
        return status.to_json(), [_spec_event(caller, "persisted", "persist", status.spec)]

    return await audited(caller, "persist", {"name": name}, run)


async def remove(systemd: Systemd, caller: Caller, authorize: Authorize, name: str, force: bool) -> dict[str, Any]:
    async def run() -> tuple[dict[str, Any], list[audit.Event]]:
        # Owner and polkit first, outside the lock (see reset).
        try:
            owned = await _owned(systemd, caller, authorize, name, force, "remove")
        except NotFound:
            # Only leftovers of NAME need the action: a name of nothing at
            # all is "not found" for everyone.
            async with lock.held_async():
                if not await _leftovers(systemd, name):
                    raise
            if caller.uid != 0:
                await authorize(ACTION_COLLECT, {"name": name})
            async with lock.held_async():
                leftovers = await _remove_leftovers(systemd, name)
            if not leftovers:
                raise
            outcome = {"name": name, "target": None, "removed": True, "detached": False, "still_used_by": [],
                       "held_bytes": 0, "leftovers": leftovers}
            return outcome, [_event(caller, "collected", "remove", f"removed leftover {what}", name)
                             for what in leftovers]
        async with lock.held_async():
            if owned.state == "stale":  # no units: its drop-in and data are all there is
                removal = overlays.Removal(owned.spec)
            else:
                await _check_no_runs(systemd, owned.spec, "remove")
                removal = await overlays.remove(systemd, name, caller.pid)
            problems = await persistence.forget(systemd, removal.spec)
        if problems:
            raise OperationFailed(f"removed overlay {name!r}, but not all of its drop-in and data: " + "; ".join(problems))
        spec = removal.spec
        users = [dataclasses.asdict(holder) for holder in removal.still_used_by]
        outcome = {"name": name, "target": spec.target, "removed": True, "detached": bool(users),
                   "still_used_by": users, "held_bytes": removal.held_bytes if users else 0, "leftovers": []}
        events = [_spec_event(caller, "removed", "remove", spec)]
        if users:
            events.append(_spec_event(caller, "detached", "remove", spec, holders.detached_text(users, removal.held_bytes)))
        return outcome, events

    return await audited(caller, "remove", {"name": name}, run)


async def diff(systemd: Systemd, caller: Caller, authorize: Authorize, name: str, force: bool) -> dict[str, Any]:
    """What overlay NAME changed (sdoverlay.changes). Only reads: not audited.

    Root's work: whiteouts and opaque dirs are marked with trusted.* xattrs,
    and the original below the overlay is seen by unmounting it in a private
    mount namespace. Under the lock, so that no reset or remove empties the
    upper dir half-way through."""
    from sdoverlay.dbusnext import asyncio  # without ssl: see there
    import json

    status = await _owned(systemd, caller, authorize, name, force, "diff")
    async with lock.held_async():
        helper = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sdoverlay.changes", status.spec.metadata_options,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        output, errors = await helper.communicate()
    if helper.returncode != 0:
        lines = errors.decode(errors="replace").strip().splitlines()
        raise OperationFailed(lines[-1] if lines else f"cannot compare overlay {name}: exit status {helper.returncode}")
    return {"name": name, "target": status.spec.target, "changes": json.loads(output)}


def _printable(text: str) -> str:
    """TEXT with its control characters escaped (a newline as \\n): systemd
    252 writes a transient unit's Description= into its unit file as it is,
    so a newline in a run's COMMAND would add lines of the caller's choosing
    (a [Service] ExecStopPost= that runs as root) at the next daemon-reload."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


RUN_POLL = 0.2  # how often a run's unit is looked at; the command's own time dominates


def run_unit_name(name: str, caller: Caller) -> str:
    """The transient unit of `sdoverlay run NAME` by CALLER's process: one at a time per process."""
    return f"{run_unit_prefix(name)}{caller.pid}.service"


async def run(systemd: Systemd, caller: Caller, authorize: Authorize, name: str, argv: list[str], cwd: str,
              environment: list[str], stdio: list[int], force: bool) -> dict[str, Any]:
    """`sdoverlay run NAME -- COMMAND`: COMMAND as the caller, in a mount
    namespace where private overlay NAME is writable (sdoverlay.private), in
    a transient unit of its own with the caller's stdin, stdout and stderr;
    returns when it exits, with its exit status. Audited: run writes to an
    overlay that is read-only to everyone else."""
    import json
    import os

    unit = run_unit_name(name, caller)

    async def started() -> tuple[dict[str, Any], list[audit.Event]]:
        if not argv:
            raise InvalidInput("run needs a COMMAND after --")
        status = await _owned(systemd, caller, authorize, name, force, "run")
        spec = status.spec
        if not spec.private:
            raise InvalidInput(f"overlay {name!r} is not private (--private): every process may write to it already")
        if status.state != "active":
            raise OperationFailed(f"overlay {name!r} is {status.state}, not active")
        # As the process that asked: root under sudo (SUDO_UID names the owner only).
        gid, groups = content.credentials(caller.uid)
        os.makedirs(paths.RUN_REQUESTS_DIR, mode=0o700, exist_ok=True)
        request_file = f"{paths.RUN_REQUESTS_DIR}/{unit}.json"
        descriptor = os.open(request_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            json.dump({"target": spec.target, "uid": caller.uid, "gid": gid, "groups": groups, "cwd": cwd,
                       "environment": dict(entry.split("=", 1) for entry in environment if "=" in entry),
                       "argv": argv}, file)
        python = sys.executable
        properties = [
            ["Description", Variant("s", f"sdoverlay run in overlay {name}: {_printable(' '.join(argv))[:200]}")],
            ["Type", Variant("s", "exec")],
            # Kept after COMMAND exits, so that its exit status can be read.
            ["RemainAfterExit", Variant("b", True)],
            ["ExecStart", Variant("a(sasb)", [[python, [python, "-I", "-m", "sdoverlay.private", "run", request_file],
                                               False]])],
            ["StandardInputFileDescriptor", Variant("h", 0)],
            ["StandardOutputFileDescriptor", Variant("h", 1)],
            ["StandardErrorFileDescriptor", Variant("h", 2)],
        ]
        try:
            result = await systemd.start_transient_unit(unit, properties, unix_fds=stdio)
        except BaseException:
            if os.path.lexists(request_file):
                os.unlink(request_file)
            raise
        if result != "done":
            raise OperationFailed(f"cannot run in overlay {name!r}: {unit} {result}")
        return {"name": name, "unit": unit}, [_spec_event(caller, "run", "run", spec, " ".join(argv)[:500])]

    outcome = await audited(caller, "run", {"name": name}, started)
    return {**outcome, **await _wait_for_run(systemd, unit, caller, name)}


async def _wait_for_run(systemd: Systemd, unit: str, caller: Caller, name: str) -> dict[str, Any]:
    """Wait for the run's COMMAND to exit; its exit status (or signal); the unit gone.

    The run is the caller's for as long as the caller is there, as
    `systemd-run --pipe` ties a unit to its client: when the caller's bus
    connection goes (the CLI killed, kill -9 included), the unit is
    stopped, and the audit trail says so. Nobody would see its output or
    its exit status, and it would go on writing to the overlay unseen."""
    from sdoverlay.unitqueries import SERVICE

    while True:
        state = (await systemd.units_by_name([unit]))[unit]
        if state.active == "failed" or state.sub == "exited" or not state.exists:
            break
        if caller.bus_name and not await systemd.name_has_owner(caller.bus_name):
            await systemd.stop_unit(unit)
            audit.record(_event(caller, "stopped", "run", "the caller's bus connection closed: its run was stopped",
                                name))
            state = (await systemd.units_by_name([unit]))[unit]
            break
        await systemd.pause(RUN_POLL)
    path = await systemd.unit_path(unit)
    code = status = None
    if path is not None:
        code = await systemd.unit_property(path, SERVICE, "ExecMainCode")
        status = await systemd.unit_property(path, SERVICE, "ExecMainStatus")
    if state.active == "failed":
        await systemd.reset_failed_unit(unit)
    elif state.exists:  # not if someone stopped it, and systemd has let it go
        await systemd.stop_unit(unit)
    # ExecMainCode is a CLD_* code: 1 exited (status: its exit status), 2
    # killed and 3 dumped (status: the signal).
    signal = status if code in (2, 3) else None
    return {"exit_status": status if code == 1 else (128 + status if signal else 1), "signal": signal}


async def signal_run(systemd: Systemd, caller: Caller, name: str, signal: int) -> dict[str, Any]:
    """Pass SIGNAL (the CLI's Ctrl-C, SIGTERM, SIGHUP) on to the caller's own run of NAME."""
    if signal not in api.RUN_SIGNALS:
        raise InvalidInput(f"signal {signal} is not passed on to a run")
    unit = run_unit_name(name, caller)
    if not (await systemd.units_by_name([unit]))[unit].exists:
        raise NotFound(f"no run of overlay {name!r} by process {caller.pid}")
    await systemd.kill_unit(unit, signal)
    return {"name": name, "unit": unit, "signal": signal}


async def _leftovers(systemd: Systemd, name: str) -> list[str]:
    """What _remove_leftovers would remove of NAME."""
    found = await collect.find(systemd, only_name=name, include_state=False)
    return [finding.what for finding in found if finding.removable] + persistence.leftover_files(name)


async def _remove_leftovers(systemd: Systemd, name: str) -> list[str]:
    """What a killed command left of overlay NAME, removed; what it was."""
    removed = []
    for finding in await collect.find(systemd, only_name=name, include_state=False):
        if finding.removable:
            await collect.remove(systemd, finding)
            removed.append(finding.what)
    return removed + await persistence.forget_name(systemd, name)


async def collect_garbage(systemd: Systemd, caller: Caller, authorize: Authorize, dry_run: bool,
                          remove_orphaned_state: bool) -> list[dict[str, str]]:
    async def run() -> tuple[list[dict[str, str]], list[audit.Event]]:
        if caller.uid != 0:
            await authorize(ACTION_COLLECT, {})
        results, events = [], []
        async with lock.held_async():
            for finding in await collect.find(systemd):
                if not (finding.removable or (finding.kind == "state" and remove_orphaned_state)):
                    action = "kept"
                elif dry_run:
                    action = "would-remove"
                else:
                    await collect.remove(systemd, finding)
                    action = "removed"
                    events.append(_event(caller, "collected", "gc", f"removed {finding.kind} {finding.what}: "
                                         f"{finding.reason}", finding.name))
                results.append(finding.to_json(action))
        return results, events

    return await audited(caller, "gc", {}, run)

