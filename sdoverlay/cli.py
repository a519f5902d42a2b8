"""The sdoverlay command line: one verb, one function."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click

from sdoverlay import __version__, overlays, paths
from sdoverlay.bus import Systemd
from sdoverlay.errors import ExitCode, InvalidInput, NotFound, SdoverlayError
from sdoverlay.overlays import OverlayStatus
from sdoverlay.spec import DEFAULT_SIZE, SIZE_PATTERN, OverlaySpec

T = TypeVar("T")

EXIT_CODES_HELP = (
    "Exit codes: 0 success, 1 operation failed, 2 invalid input, 3 not found, "
    "4 conflict (name or target in use), 5 permission denied."
)


def _run(operation: Callable[[Systemd], Awaitable[T]]) -> T:
    async def connected() -> T:
        async with Systemd.connect() as systemd:
            return await operation(systemd)

    try:
        return asyncio.run(connected())
    except SdoverlayError as error:
        click.echo(f"sdoverlay: {error.message}", err=True)
        sys.exit(error.exit_code)


def _fail(error: SdoverlayError) -> None:
    click.echo(f"sdoverlay: {error.message}", err=True)
    sys.exit(error.exit_code)


def _human_bytes(count: int | None) -> str:
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _emit(status: OverlayStatus, as_json: bool, verb: str) -> None:
    if as_json:
        click.echo(json.dumps(status.to_json(), indent=2))
        return
    spec = status.spec
    what = f"{spec.source} on {spec.target}" if spec.source else f"empty writable layer on {spec.target}"
    mode = "read-only" if spec.read_only else "writable"
    click.echo(f"{verb} overlay {spec.name!r}: {what} ({mode}, {status.state}, units {', '.join(spec.units)})")


def _check_target(target: str) -> str:
    if not target or not target.startswith("/"):
        raise InvalidInput(f"target {target!r} is not an absolute path")
    resolved = paths.canonical_target(target)
    if not os.path.exists(resolved):
        raise NotFound(f"target {target} does not exist")
    if not os.path.isdir(resolved):
        raise InvalidInput(f"target {target} is not a directory")
    if not paths.is_within(resolved, "/usr"):
        raise InvalidInput(f"target {resolved} is not at or under /usr")
    reason = paths.check_path_chars(resolved)
    if reason:
        raise InvalidInput(f"target {resolved} {reason}")
    if resolved != target.rstrip("/") and target != "/":
        click.echo(f"sdoverlay: target {target} resolves to {resolved}; using {resolved}", err=True)
    return resolved


def _validated(name: str, target: str, source: str | None, read_only: bool, size: str) -> dict[str, object]:
    """Checked, canonical fields of a new overlay (all but how it is mounted)."""
    reason = paths.check_name(name)
    if reason:
        raise InvalidInput(f"invalid overlay name {name!r}: {reason}")
    if not SIZE_PATTERN.fullmatch(size):
        raise InvalidInput(f"invalid size {size!r}: use a number with an optional k, M or G suffix, or a percentage of RAM")
    resolved_target = _check_target(target)
    if source is not None:
        if not os.path.lexists(source):
            raise NotFound(f"source {source} does not exist")
        source = os.path.abspath(source)
    return {
        "name": name,
        "target": resolved_target,
        "source": source,
        "read_only": read_only,
        "size": size,
        "owner_uid": overlays.caller_uid(),
        "created_at": overlays.now_iso(),
    }


def _create(fields: Callable[[], dict[str, object]], as_json: bool, verb: str) -> None:
    try:
        checked = fields()
    except SdoverlayError as error:
        _fail(error)

    async def create(systemd: Systemd) -> OverlayStatus:
        target = str(checked["target"])
        await overlays.check_free(systemd, str(checked["name"]), target)
        spec = OverlaySpec(**checked, **(await overlays.mount_plan(systemd, target)))  # type: ignore[arg-type]
        return await overlays.apply(systemd, spec)

    _emit(_run(create), as_json, verb)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
size_option = click.option(
    "--size",
    default=DEFAULT_SIZE,
    show_default=True,
    help="Memory cap of the overlay's tmpfs (content plus writes): bytes with k/M/G, or a percentage of RAM.",
)


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
        click.echo(f"{command}: {error.format_message()} (see '{command} --help')", err=True)
        sys.exit(ExitCode.INVALID)
    except click.ClickException as error:
        click.echo(f"sdoverlay: {error.format_message()}", err=True)
        sys.exit(ExitCode.FAILED)
    except click.Abort:
        click.echo("sdoverlay: aborted", err=True)
        sys.exit(ExitCode.FAILED)


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("name")
@click.argument("source", type=click.Path())
@click.argument("target", type=click.Path())
@click.option("--read-only", is_flag=True, help="Lay SOURCE over TARGET without making TARGET writable.")
@size_option
@json_option
def apply(name: str, source: str, target: str, read_only: bool, size: str, as_json: bool) -> None:
    """Copy SOURCE (a file or a tree) and lay it over TARGET as overlay NAME.

    A file SOURCE appears as TARGET/basename; a directory's entries appear in
    TARGET. SOURCE is copied at once: later edits to it do not show.
    """
    _create(lambda: _validated(name, target, source, read_only, size), as_json, "applied")


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("target", default="/usr", type=click.Path())
@click.option("--name", help="Overlay name; default: derived from TARGET (/usr -> usr).")
@size_option
@json_option
def unlock(target: str, name: str | None, size: str, as_json: bool) -> None:
    """Make TARGET (default /usr) writable with an empty overlay; writes go to memory."""

    def fields() -> dict[str, object]:
        return _validated(name or paths.default_unlock_name(paths.canonical_target(target)), target, None, False, size)

    _create(fields, as_json, "unlocked")


@cli.command(name="list", epilog=EXIT_CODES_HELP)
@click.option("--user", "uid", type=int, help="Only overlays owned by this uid.")
@json_option
def list_(uid: int | None, as_json: bool) -> None:
    """List overlays, with their state and memory use."""
    found = [s for s in _run(overlays.list_all) if uid is None or s.spec.owner_uid == uid]
    if as_json:
        click.echo(json.dumps([s.to_json() for s in found], indent=2))
        return
    rows = [("NAME", "TARGET", "SOURCE", "OWNER", "MODE", "STATE", "USED", "LIMIT", "CREATED")]
    for status in found:
        spec = status.spec
        rows.append((
            spec.name, spec.target, spec.source or "-", str(spec.owner_uid),
            "ro" if spec.read_only else "rw", status.state,
            _human_bytes(status.upper_used_bytes), _human_bytes(status.size_limit_bytes), spec.created_at,
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    click.echo(f"\n{len(found)} overlay(s).")


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("name")
@json_option
def reset(name: str, as_json: bool) -> None:
    """Discard what was written to overlay NAME; keep its applied content."""
    _emit(_run(lambda systemd: overlays.reset(systemd, name)), as_json, "reset")


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("name")
@json_option
def remove(name: str, as_json: bool) -> None:
    """Unmount overlay NAME, free its memory and remove its units."""
    spec = _run(lambda systemd: overlays.remove(systemd, name))
    if as_json:
        click.echo(json.dumps({"name": spec.name, "target": spec.target, "removed": True}))
    else:
        click.echo(f"removed overlay {spec.name!r} from {spec.target}")


