"""The sdoverlay command line: one verb, one function.

Every verb that changes something runs through `_execute`, which turns
errors into one line and an exit code, and records the outcome (success,
refusal or failure) in the audit trail.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

import click

from sdoverlay import (
    __version__,
    audit,
    config,
    identity,
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
    OperationFailed,
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


def _on_bus(operation: Callable[[Systemd], Awaitable[T]]) -> T:
    async def connected() -> T:
        async with Systemd.connect() as systemd:
            return await operation(systemd)

    return asyncio.run(connected())


def _execute(verb: str, request: dict[str, str | None], operation: Callable[[], T]) -> T:
    """Run OPERATION; audit its outcome under VERB: the REQUEST's name, target
    and source on refusal or failure, the overlay's own on success."""

    def event(kind: str, result: str, name: str, target: str, source: str, owner_uid: int) -> audit.Event:
        return audit.Event(event=kind, verb=verb, name=name, target=target, source=source,
                           owner_uid=owner_uid, session=identity.session_id(), result=result)

    try:
        outcome = operation()
    except SdoverlayError as error:
        kind = "failed" if error.exit_code == ExitCode.FAILED else "refused"
        audit.record(event(kind, error.message, request.get("name") or "", request.get("target") or "",
                           request.get("source") or "", identity.caller_uid()))
        _die(error)
    spec = outcome.spec if isinstance(outcome, OverlayStatus) else outcome
    assert isinstance(spec, OverlaySpec)
    kind = {"apply": "applied", "unlock": "applied", "reset": "reset", "remove": "removed", "persist": "persisted"}[verb]
    audit.record(event(kind, "ok", spec.name, spec.target, spec.source or "", spec.owner_uid))
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
    """Entry point: click's usage errors become one line too, with exit code 2."""
    try:
        cli.main(prog_name="sdoverlay", standalone_mode=False)
    except click.UsageError as error:
        command = error.ctx.command_path if error.ctx else "sdoverlay"
        message = f"{error.format_message()} (see '{command} --help')"
        verb = error.ctx.info_name if error.ctx and error.ctx.parent else ""
        if verb in ("apply", "unlock", "reset", "remove", "persist"):
            audit.record(audit.Event(event="refused", verb=verb, name="", target="", source="",
                                     owner_uid=identity.caller_uid(), session=identity.session_id(),
                                     result=message))
        click.echo(f"{command}: {message}", err=True)
        sys.exit(ExitCode.INVALID)
    except click.ClickException as error:
        click.echo(f"sdoverlay: {error.format_message()}", err=True)
        sys.exit(ExitCode.FAILED)
    except click.Abort:
        click.echo("sdoverlay: aborted", err=True)
        sys.exit(ExitCode.FAILED)


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

    return _on_bus(create)


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
    click.echo(f"\n{len(found)} overlay(s).")


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("name")
@force_option
@json_option
def reset(name: str, force: bool, as_json: bool) -> None:
    """Discard what was written to overlay NAME; keep its applied content."""
    caller = identity.caller_uid()
    status = _execute("reset", {"name": name},
                      lambda: _on_bus(lambda systemd: overlays.reset(systemd, name, caller, force)))
    _emit(status, as_json, "reset")


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("name")
@force_option
@json_option
def remove(name: str, force: bool, as_json: bool) -> None:
    """Unmount overlay NAME, free its memory and remove its units."""
    caller = identity.caller_uid()

    async def remove_and_forget(systemd: Systemd) -> OverlaySpec:
        spec = await overlays.remove(systemd, name, caller, force)
        problems = await persistence.forget(systemd, spec)
        if problems:
            raise OperationFailed(f"removed overlay {name!r}, but not all of its drop-in and data: " + "; ".join(problems))
        return spec

    spec = _execute("remove", {"name": name}, lambda: _on_bus(remove_and_forget))
    if as_json:
        click.echo(json.dumps({"name": spec.name, "target": spec.target, "removed": True}))
    else:
        click.echo(f"removed overlay {spec.name!r} from {spec.target}")


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
                      lambda: _on_bus(lambda systemd: persistence.persist(systemd, name, caller, force)))
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
