"""The sdoverlay command line: one verb, one function.

Every verb that changes something runs through `_execute`, which turns
errors into one line and an exit code, and records the outcome (success,
refusal or failure) in the audit trail.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

import click

from sdoverlay import (
    __version__,
    audit,
    collect,
    config,
    holders,
    identity,
    interrupts,
    lock,
    overlays,
    paths,
    persistence,
    sizes,
    validate,
)
from sdoverlay.bus import Systemd
from sdoverlay.errors import (
    ExitCode,
    LimitExceeded,
    NotFound,
    OperationFailed,
    PermissionDenied,
    SdoverlayError,
)
from sdoverlay.overlays import OverlayStatus
from sdoverlay.spec import DEFAULT_SIZE, OverlaySpec

T = TypeVar("T")

EXIT_CODES_HELP = (
    "Exit codes: 0 success, 1 operation failed, 2 invalid input, 3 not found, "
    "4 conflict (name or target in use), 5 permission denied, 6 over a size limit or quota."
)


def _die(error: SdoverlayError) -> NoReturn:
    click.echo(f"sdoverlay: {error.message}", err=True)
    sys.exit(error.exit_code)


def _on_bus(operation: Callable[[Systemd], Awaitable[T]], changes: bool = False) -> T:
    """Run OPERATION on a connection to systemd. CHANGES: it creates, changes
    or removes something, so it runs under the host-wide lock, and Ctrl-C
    waits for it to finish (sdoverlay.lock, sdoverlay.interrupts)."""

    async def connected() -> T:
        async with Systemd.connect() as systemd:
            return await operation(systemd)

    if not changes:
        return asyncio.run(connected())
    with lock.held(), interrupts.deferred():
        return asyncio.run(connected())


def _as_sdoverlay_error(error: Exception) -> SdoverlayError:
    """Any failure as one line with an exit code: never a traceback (issue 7, item 8)."""
    if isinstance(error, SdoverlayError):
        return error
    if isinstance(error, OSError):
        what = f"{error.strerror or error}" + (f": {error.filename}" if error.filename else "")
        if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return PermissionDenied(f"permission denied: {what}; run as root")
        return OperationFailed(what)
    return OperationFailed(f"internal error: {type(error).__name__}: {error}")


def _event(kind: str, verb: str, result: str, name: str = "", target: str = "", source: str = "",
           owner_uid: int | None = None) -> audit.Event:
    return audit.Event(event=kind, verb=verb, name=name, target=target, source=source,
                       owner_uid=identity.caller_uid() if owner_uid is None else owner_uid,
                       session=identity.session_id(), result=result)


def _spec_events(verb: str, outcome: object) -> list[audit.Event]:
    spec = outcome.spec if isinstance(outcome, OverlayStatus) else outcome
    assert isinstance(spec, OverlaySpec)
    kind = {"apply": "applied", "unlock": "applied", "reset": "reset", "persist": "persisted"}[verb]
    return [_event(kind, verb, "ok", spec.name, spec.target, spec.source or "", spec.owner_uid)]


def _execute(verb: str, request: dict[str, str | None], operation: Callable[[], T],
             events: Callable[[str, T], list[audit.Event]] = _spec_events) -> T:
    """Run OPERATION; audit its outcome under VERB: the REQUEST's name, target
    and source on refusal or failure, EVENTS of the outcome on success."""
    try:
        outcome = operation()
    except Exception as raised:  # noqa: BLE001 - every failure is one audited line
        error = _as_sdoverlay_error(raised)
        kind = "failed" if error.exit_code == ExitCode.FAILED else "refused"
        audit.record(_event(kind, verb, error.message, request.get("name") or "", request.get("target") or "",
                            request.get("source") or ""))
        _die(error)
    for event in events(verb, outcome):
        audit.record(event)
    return outcome


def _human_bytes(count: int | None) -> str:
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "K", "M", "G"):
        if value < 1024:
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}T"


def _emit(status: OverlayStatus, as_json: bool, verb: str) -> None:
    if as_json:
        click.echo(json.dumps(status.to_json(), indent=2))
        return
    spec = status.spec
    what = f"{spec.source} on {spec.target}" if spec.source else f"empty writable layer on {spec.target}"
    mode = "read-only" if spec.read_only else "writable"
    click.echo(f"{verb} overlay {spec.name!r}: {what} ({mode}, {status.state}, units {', '.join(spec.units)})")


@click.group(epilog=EXIT_CODES_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sdoverlay")
def cli() -> None:
    """Named, transient overlays on a read-only /usr, managed by systemd."""


def main() -> None:
    """Entry point: click's usage errors become one line too, with exit code 2;
    anything unforeseen one line with exit code 1, never a traceback."""
    try:
        cli.main(prog_name="sdoverlay", standalone_mode=False)
    except click.UsageError as error:
        command = error.ctx.command_path if error.ctx else "sdoverlay"
        message = f"{error.format_message()} (see '{command} --help')"
        verb = error.ctx.info_name if error.ctx and error.ctx.parent else ""
        if verb in CHANGING_VERBS:
            audit.record(_event("refused", verb, message))
        click.echo(f"{command}: {message}", err=True)
        sys.exit(ExitCode.INVALID)
    except click.ClickException as error:
        click.echo(f"sdoverlay: {error.format_message()}", err=True)
        sys.exit(ExitCode.FAILED)
    except click.Abort:
        click.echo("sdoverlay: aborted", err=True)
        sys.exit(ExitCode.FAILED)
    except Exception as raised:  # noqa: BLE001 - list, log and the rest: one line, too
        _die(_as_sdoverlay_error(raised))


CHANGING_VERBS = ("apply", "unlock", "reset", "remove", "persist", "gc")

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
force_option = click.option("--force", is_flag=True, help="Act on an overlay that belongs to another user.")
size_option = click.option(
    "--size",
    default=DEFAULT_SIZE,
    show_default=True,
    help="Memory cap of the overlay's tmpfs (content plus writes): bytes with k/M/G, or a percentage of RAM.",
)


def _create(name: str, target: str, source: str | None, read_only: bool, size: str,
            keep_ownership: bool = False, allow_setuid: bool = False,
            allow_world_writable: bool = False, hotfix: bool = False) -> OverlayStatus:
    """Check everything, then apply. Nothing is created before all checks pass."""
    validate.name(name)
    validate.size(size)
    limits = config.load()
    resolved_target = validate.target(target, limits.allowed_roots)
    resolved_source = None
    if source is not None:
        resolved_source = validate.source(source)
        found = validate.scan(resolved_source)
        validate.content(found, f"source {source}", allow_setuid, allow_world_writable)
        limit = sizes.tmpfs_size_bytes(size)
        if found.bytes_needed > limit:
            raise LimitExceeded(
                f"source {source} needs {found.bytes_needed} bytes, more than --size {size} ({limit} bytes)"
            )
    owner = identity.caller_uid()

    async def create(systemd: Systemd) -> OverlayStatus:
        await overlays.check_new(systemd, name, resolved_target, size, owner, limits)
        spec = OverlaySpec(
            name=name, target=resolved_target, source=resolved_source, read_only=read_only, size=size,
            owner_uid=owner, created_at=overlays.now_iso(), session=identity.session_id(),
            keep_ownership=keep_ownership, allow_setuid=allow_setuid, allow_world_writable=allow_world_writable,
            persistent=hotfix, dropin=persistence.dropin_path(name) if hotfix else "",
            **(await overlays.mount_plan(systemd, resolved_target)),
        )
        if hotfix:
            return await persistence.hotfix(systemd, spec)
        return await overlays.apply(systemd, spec)

    return _on_bus(create, changes=True)


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("name")
@click.argument("source")
@click.argument("target")
@click.option("--read-only", is_flag=True, help="Lay SOURCE over TARGET without making TARGET writable.")
@size_option
@click.option("--keep-ownership", is_flag=True, help="Keep SOURCE's owners instead of making the copy root:root.")
@click.option("--allow-setuid", is_flag=True,
              help="Accept setuid/setgid files and file capabilities in SOURCE: they will run with privileges.")
@click.option("--allow-world-writable", is_flag=True, help="Accept world-writable files and dirs in SOURCE.")
@json_option
def apply(name: str, source: str, target: str, read_only: bool, size: str, keep_ownership: bool,
          allow_setuid: bool, allow_world_writable: bool, as_json: bool) -> None:
    """Copy SOURCE (a file or a tree) and lay it over TARGET as overlay NAME.

    A file SOURCE appears as TARGET/basename; a directory's entries appear in
    TARGET. SOURCE is copied at once: later edits to it do not show. The copy
    is owned by root:root unless --keep-ownership.
    """
    status = _execute("apply", {"name": name, "target": target, "source": source}, lambda: _create(
        name, target, source, read_only, size, keep_ownership, allow_setuid, allow_world_writable))
    _emit(status, as_json, "applied")


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("target", default="/usr")
@click.option("--name", help="Overlay name; default: derived from TARGET (/usr -> usr).")
@click.option("--hotfix", is_flag=True,
              help="Persistent: writes survive reboots (kept in /var/lib/sdoverlay) until the overlay is removed.")
@size_option
@json_option
def unlock(target: str, name: str | None, hotfix: bool, size: str, as_json: bool) -> None:
    """Make TARGET (default /usr) writable with an empty overlay; writes go to memory."""
    chosen = name if name is not None else paths.default_unlock_name(os.path.realpath(target) if target else "")
    status = _execute("unlock", {"name": chosen, "target": target},
                      lambda: _create(chosen, target, None, False, size, hotfix=hotfix))
    _emit(status, as_json, "unlocked")


@cli.command(name="list", epilog=EXIT_CODES_HELP)
@click.option("--user", "uid", type=int, help="Only overlays owned by this uid.")
@json_option
def list_(uid: int | None, as_json: bool) -> None:
    """List overlays, with their state and memory use."""
    try:
        found = [s for s in _on_bus(overlays.list_all) if uid is None or s.spec.owner_uid == uid]
    except SdoverlayError as error:
        _die(error)
    if as_json:
        click.echo(json.dumps([s.to_json() for s in found], indent=2))
        return
    rows = [("NAME", "TARGET", "SOURCE", "OWNER", "MODE", "STATE", "USED", "LIMIT", "CREATED", "DROP-IN")]
    for status in found:
        spec = status.spec
        rows.append((
            spec.name, spec.target, spec.source or "-", str(spec.owner_uid),
            ("ro" if spec.read_only else "rw") + (",persistent" if spec.persistent else ""), status.state,
            _human_bytes(status.upper_used_bytes), _human_bytes(status.size_limit_bytes), spec.created_at,
            spec.dropin or "-",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    for status in found:
        if status.problem:
            click.echo(f"{status.spec.name}: {status.state}: {status.problem}")
    click.echo(f"\n{len(found)} overlay(s).")


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("name")
@force_option
@json_option
def reset(name: str, force: bool, as_json: bool) -> None:
    """Discard what was written to overlay NAME; keep its applied content."""
    caller = identity.caller_uid()
    status = _execute("reset", {"name": name},
                      lambda: _on_bus(lambda systemd: overlays.reset(systemd, name, caller, force), changes=True))
    _emit(status, as_json, "reset")


@dataclasses.dataclass(frozen=True)
class _Removed:
    name: str
    removal: overlays.Removal | None  # None: only leftovers of NAME were there
    leftovers: list[str]


def _removal_events(verb: str, outcome: _Removed) -> list[audit.Event]:
    if outcome.removal is None:
        return [_event("collected", verb, f"removed leftover {what}", outcome.name) for what in outcome.leftovers]
    spec = outcome.removal.spec
    events = [_event("removed", verb, "ok", spec.name, spec.target, spec.source or "", spec.owner_uid)]
    if outcome.removal.still_used_by:
        events.append(_event("detached", verb, _detached_text(outcome.removal), spec.name, spec.target,
                             spec.source or "", spec.owner_uid))
    return events


def _detached_text(removal: overlays.Removal) -> str:
    return (
        f"detached lazily: still used by {holders.listed(removal.still_used_by)}; "
        f"{_human_bytes(removal.held_bytes)} stay allocated until they exit (listed as 'detached')"
    )


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("name")
@force_option
@json_option
def remove(name: str, force: bool, as_json: bool) -> None:
    """Unmount overlay NAME, free its memory and remove its units.

    If processes still use an overlay that is unmounted lazily (one on a
    mount point such as /usr, or one covering umount itself), it is detached:
    they are named, and it stays listed as 'detached' until they exit and its
    memory is freed. Where only leftovers of NAME remain (a command was
    killed), they are removed.
    """
    caller = identity.caller_uid()

    async def remove_and_forget(systemd: Systemd) -> _Removed:
        try:
            removal = await overlays.remove(systemd, name, caller, force)
        except NotFound:
            leftovers = await _remove_leftovers(systemd, name)
            if not leftovers:
                raise
            return _Removed(name, None, leftovers)
        problems = await persistence.forget(systemd, removal.spec)
        if problems:
            raise OperationFailed(f"removed overlay {name!r}, but not all of its drop-in and data: " + "; ".join(problems))
        return _Removed(name, removal, [])

    outcome = _execute("remove", {"name": name}, lambda: _on_bus(remove_and_forget, changes=True), _removal_events)
    removal = outcome.removal
    if as_json:
        click.echo(json.dumps({
            "name": name,
            "target": removal.spec.target if removal else None,
            "removed": True,
            "detached": bool(removal and removal.still_used_by),
            "still_used_by": [dataclasses.asdict(holder) for holder in removal.still_used_by] if removal else [],
            "held_bytes": removal.held_bytes if removal and removal.still_used_by else 0,
            "leftovers": outcome.leftovers,
        }, indent=2))
    elif removal is None:
        click.echo(f"overlay {name!r} was gone; removed what was left of it: {', '.join(outcome.leftovers)}")
    elif removal.still_used_by:
        click.echo(f"removed overlay {name!r} from {removal.spec.target}; {_detached_text(removal)}")
    else:
        click.echo(f"removed overlay {name!r} from {removal.spec.target}")


async def _remove_leftovers(systemd: Systemd, name: str) -> list[str]:
    """What a killed command left of overlay NAME, removed; what it was."""
    removed = []
    for finding in await collect.find(systemd, only_name=name, include_state=False):
        if finding.removable:
            await collect.remove(systemd, finding)
            removed.append(finding.what)
    return removed + await persistence.forget_name(systemd, name)


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("name")
@force_option
@json_option
def persist(name: str, force: bool, as_json: bool) -> None:
    """Make live overlay NAME persistent: it comes back at boot, with its writes.

    Writes its drop-in to /etc/sdoverlay.d/NAME.conf and keeps its content
    and writes under /var/lib/sdoverlay/NAME.
    """
    caller = identity.caller_uid()
    status = _execute("persist", {"name": name},
                      lambda: _on_bus(lambda systemd: persistence.persist(systemd, name, caller, force), changes=True))
    _emit(status, as_json, "persisted")


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("name", required=False)
@json_option
def log(name: str | None, as_json: bool) -> None:
    """Show the audit history (all overlays, or NAME's) from the journal."""
    history = audit.read(name)
    if as_json:
        click.echo(json.dumps(history, indent=2))
        return
    for entry in history:
        owner = f"uid={entry['owner_uid']}" if entry["owner_uid"] is not None else "uid=-"
        line = f"{entry['time']}  {entry['event']:8s} {entry['verb']:6s} {entry['name'] or '-'}  {entry['target'] or '-'}  {owner}"
        if entry["result"] != "ok":
            line += f"  {entry['result']}"
        click.echo(line)
    if not history:
        click.echo("no sdoverlay events in the journal" + (f" for {name!r}" if name else ""))


@cli.command(epilog=EXIT_CODES_HELP)
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@click.option("--remove-orphaned-state", is_flag=True,
              help="Also remove /var/lib/sdoverlay/NAME dirs that no drop-in names (they may hold someone's writes).")
@json_option
def gc(dry_run: bool, remove_orphaned_state: bool, as_json: bool) -> None:
    """Remove what belongs to no overlay: stale hold units, failed units of
    ours, unmounted area dirs, partial copies left by killed commands.

    A live overlay is never touched. Orphaned persistent state is reported,
    and removed only with --remove-orphaned-state.
    """

    async def collect_garbage(systemd: Systemd) -> list[tuple[collect.Finding, str]]:
        if os.geteuid() != 0:
            raise PermissionDenied("gc looks at and removes units and files of every user: run it as root")
        results = []
        for finding in await collect.find(systemd):
            if not (finding.removable or (finding.kind == "state" and remove_orphaned_state)):
                results.append((finding, "kept"))
            elif dry_run:
                results.append((finding, "would-remove"))
            else:
                await collect.remove(systemd, finding)
                results.append((finding, "removed"))
        return results

    def events(verb: str, results: list[tuple[collect.Finding, str]]) -> list[audit.Event]:
        return [_event("collected", verb, f"removed {finding.kind} {finding.what}: {finding.reason}", finding.name)
                for finding, action in results if action == "removed"]

    results = _execute("gc", {}, lambda: _on_bus(collect_garbage, changes=True), events)
    if as_json:
        click.echo(json.dumps([finding.to_json(action) for finding, action in results], indent=2))
        return
    verbs = {"removed": "removed", "would-remove": "would remove", "kept": "left alone"}
    for finding, action in results:
        click.echo(f"{verbs[action]}: {finding.what} ({finding.reason})")
    removed = sum(1 for _, action in results if action != "kept")
    click.echo(f"{removed} item(s) {'to remove' if dry_run else 'removed'}, {len(results) - removed} left alone.")
