"""The sdoverlay command line: one verb, one function.

Every verb that changes something is a call to sdoverlay's D-Bus service
(sdoverlay.client), which checks, decides with polkit, does the work and
audits it; the CLI prints the outcome. `list` and `log` read systemd and the
journal directly. Errors are one line and an exit code.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, NoReturn

import click

from sdoverlay import VERSION_TEXT, __version__, paths, sizes
from sdoverlay.errors import ExitCode, InvalidInput, SdoverlayError, as_sdoverlay_error
from sdoverlay.paths import SOURCE_SEPARATOR
from sdoverlay.sizes import DEFAULT_SIZE

if TYPE_CHECKING:
    from sdoverlay import audit

# Each verb imports what it needs itself: asyncio, dbus_next, the journal
# and the overlay logic were ~70 ms of every start, --version and --help
# included, before any work (issue 9; benchmarks/README.md).

EXIT_CODES_HELP = (
    "Exit codes: 0 success, 1 operation failed, 2 invalid input, 3 not found, "
    "4 conflict (name or target in use), 5 permission denied, 6 over a size limit or quota."
)


class _Output:
    """How this command prints, set by the options every verb shares
    (systemd's: --json=MODE, --no-legend, --no-pager, -q)."""

    json_mode = "off"  # pretty, short (one line) or off (text)
    legend = True  # table headers and closing counts
    pager = True  # long text through a pager, on a terminal
    quiet = False  # no success message of a changing verb


OUTPUT = _Output()
JSON_MODES = ("pretty", "short", "off")


def _print_json(value: Any) -> None:
    # json: 4 ms of every start when imported at the top (issue 9)
    if OUTPUT.json_mode == "short":
        import json

        click.echo(json.dumps(value, separators=(",", ":")))
    else:
        from sdoverlay import prettyjson

        click.echo(prettyjson.dumps(value))


def _say(text: str) -> None:
    """A changing verb's message of success: not with -q."""
    if not OUTPUT.quiet:
        click.echo(text)


def _show(lines: list[str]) -> None:
    """Text output, through a pager where systemctl would use one: on a
    terminal, when longer than it is high, unless --no-pager. The pager is
    $SYSTEMD_PAGER, $PAGER or less (with $SYSTEMD_LESS, default FRSXMK, as
    systemd's tools run it); an empty one or "cat" turns paging off."""
    text = "\n".join(lines) + "\n" if lines else ""
    pager = os.environ.get("SYSTEMD_PAGER", os.environ.get("PAGER", "less"))
    if (not OUTPUT.pager or not sys.stdout.isatty() or pager in ("", "cat")
            or len(lines) < os.get_terminal_size(sys.stdout.fileno()).lines):
        click.echo(text, nl=False)
        return
    import subprocess

    environment = {**os.environ, "LESS": os.environ.get("SYSTEMD_LESS", "FRSXMK")}
    try:
        subprocess.run(["/bin/sh", "-c", pager], input=text, text=True, env=environment, check=False)
    except OSError:
        click.echo(text, nl=False)


def _complain(error: SdoverlayError) -> None:
    """ERROR's one line, on stderr."""
    click.echo(f"sdoverlay: {error.message}", err=True)


def _die(error: SdoverlayError) -> NoReturn:
    _complain(error)
    sys.exit(error.exit_code)


def _cli_event(kind: str, verb: str, result: str, request: dict[str, str] | None = None) -> audit.Event:
    from sdoverlay import audit, identity

    request = request or {}
    return audit.Event(event=kind, verb=verb, name=request.get("name", ""), target=request.get("target", ""),
                       source=request.get("source", ""), owner_uid=os.getuid(), session=identity.session_id(),
                       result=result, caller_uid=os.getuid())


def _request(verb: str, request: dict[str, str], method: str, arguments: list[Any], options: dict[str, Any],
             ask_password: bool) -> Any:
    """Call the service's METHOD for VERB with ARGUMENTS and a{sv} OPTIONS;
    its outcome, or die with its one line."""
    try:
        return _call_service(verb, request, method, arguments, options, ask_password)
    except SdoverlayError as error:
        _die(error)


def _call_service(verb: str, request: dict[str, str], method: str, arguments: list[Any], options: dict[str, Any],
                  ask_password: bool) -> Any:
    """The outcome of the service's METHOD, or its SdoverlayError.

    The service audits what it refused or failed; what never reached it
    (no service, no bus) the CLI records itself."""
    from sdoverlay import audit, client

    try:
        return client.call(method, [*arguments, client.options(**options)], ask_password)
    except (client.ServiceError, client.Interrupted):
        raise
    except Exception as raised:  # noqa: BLE001 - one audited line, never a traceback
        error = as_sdoverlay_error(raised)
        audit.record(_cli_event("failed" if error.exit_code == ExitCode.FAILED else "refused", verb, error.message,
                                request))
        raise error from raised


def _query(method: str, arguments: list[Any], options: dict[str, Any], ask_password: bool) -> Any:
    """Call a service method that only reads (nothing to audit); its outcome, or die with its one line."""
    from sdoverlay import client

    try:
        return client.call(method, [*arguments, client.options(**options)], ask_password)
    except Exception as raised:  # noqa: BLE001 - one line, never a traceback
        _die(as_sdoverlay_error(raised))


def _on_bus(operation: Any) -> Any:
    """OPERATION's result, a coroutine function that only reads from
    systemd, over a blocking connection (sdoverlay.blocking: no asyncio)."""
    from sdoverlay import blocking

    with blocking.BlockingSystemd.connect() as systemd:
        return blocking.run(operation(systemd))


def _emit(status: dict[str, Any], as_json: bool, verb: str) -> None:
    if as_json:
        _print_json(status)
        return
    target = status["target"]
    what = f"{status['source']} on {target}" if status["source"] else f"empty writable layer on {target}"
    mode = "read-only" if status["read_only"] else "private" if status["private"] else "writable"
    _say(f"{verb} overlay {status['name']!r}: {what} ({mode}, {status['state']}, units {', '.join(status['units'])})")


def _overlay_names(_context: click.Context, _parameter: click.Parameter, incomplete: str) -> list[str]:
    """Tab completion of NAME: the overlays there are (none if they cannot be listed)."""
    from sdoverlay.status import list_all

    try:
        return sorted(s.spec.name for s in _on_bus(list_all) if s.spec.name.startswith(incomplete))
    except Exception:  # noqa: BLE001 - no bus, no systemd: nothing to complete, never a traceback on Tab
        return []


def _on_behalf_of() -> int | None:
    """The user root acts for (sudo, pkexec); the service honours it only from root."""
    if os.getuid() == 0:
        from sdoverlay import identity

        owner = identity.caller_uid()
        return owner if owner != 0 else None
    return None


@click.group(epilog=EXIT_CODES_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sdoverlay", message=VERSION_TEXT)
def cli() -> None:
    """Named, transient overlays on a read-only /usr, managed by systemd."""


def top_level_help() -> str:
    """`sdoverlay --help` as click prints it on a terminal of 80 columns or more
    (sdoverlay.entry answers with this, written to its HELP_FILE by `make help`)."""
    with cli.make_context("sdoverlay", [], resilient_parsing=True, terminal_width=78) as context:
        return cli.get_help(context) + "\n"


def main() -> None:
    """Entry point: click's usage errors become one line too, with exit code 2;
    anything unforeseen one line with exit code 1, never a traceback."""
    try:
        cli.main(args=bare_json_is_pretty(sys.argv[1:]), prog_name="sdoverlay", standalone_mode=False)
    except click.UsageError as error:
        command = error.ctx.command_path if error.ctx else "sdoverlay"
        message = f"{error.format_message()} (see '{command} --help')"
        verb = error.ctx.info_name if error.ctx and error.ctx.parent else ""
        if verb in CHANGING_VERBS:
            from sdoverlay import audit

            audit.record(_cli_event("refused", verb, message))
        click.echo(f"{command}: {message}", err=True)
        sys.exit(ExitCode.INVALID)
    except click.ClickException as error:
        click.echo(f"sdoverlay: {error.format_message()}", err=True)
        sys.exit(ExitCode.FAILED)
    except click.Abort:
        click.echo("sdoverlay: aborted", err=True)
        sys.exit(ExitCode.FAILED)
    except Exception as raised:  # noqa: BLE001 - list, log and the rest: one line, too
        _die(as_sdoverlay_error(raised))


CHANGING_VERBS = ("apply", "unlock", "reset", "remove", "persist", "gc")

def _set(attribute: str) -> Any:
    def store(_context: click.Context, _parameter: click.Parameter, value: Any) -> Any:
        setattr(OUTPUT, attribute, value)
        return value

    return store


def _set_json(_context: click.Context, _parameter: click.Parameter, value: str) -> bool:
    OUTPUT.json_mode = value
    return value != "off"


def json_option(function: Any) -> Any:
    """--json[=pretty|short|off], --no-legend, --no-pager and -q/--quiet, as systemd's tools have them."""
    for option in reversed((
        click.option("--json", "as_json", type=click.Choice(JSON_MODES), default="off", callback=_set_json,
                     metavar="[=pretty|short|off]", help="Print JSON: pretty (a bare --json), short (one line) or off (text)."),
        click.option("--no-legend", is_flag=True, expose_value=False, callback=_set("legend"),
                     help="No table headers and closing counts.", flag_value=False, default=True),
        click.option("--no-pager", is_flag=True, expose_value=False, callback=_set("pager"),
                     help="Do not pipe long output into a pager.", flag_value=False, default=True),
        click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=_set("quiet"),
                     help="No message on success (errors are still said)."),
    )):
        function = option(function)
    return function


def bare_json_is_pretty(args: list[str]) -> list[str]:
    """A bare --json means --json=pretty, as before --json took a mode. (click
    would take the next argument as the mode, as in `--json NAME`.) Not in
    the COMMAND of `run`, nor after a --."""
    if args[:1] == ["run"]:
        return args
    end = args.index("--") if "--" in args else len(args)
    return [("--json=pretty" if arg == "--json" else arg) for arg in args[:end]] + args[end:]


force_option = click.option("--force", is_flag=True, help="Act on an overlay that belongs to another user.")
ask_option = click.option("--no-ask-password", "no_ask_password", is_flag=True,
                          help="Do not ask for a password (no polkit agent, no interactive authorization).")
private_option = click.option(
    "--private", is_flag=True,
    help="Writable only for 'sdoverlay run NAME -- COMMAND'; read-only for every other process.")
size_option = click.option(
    "--size",
    default=DEFAULT_SIZE,
    show_default=True,
    help="Memory cap of the overlay's tmpfs (content plus writes): bytes with k/M/G, or a percentage of RAM.",
)


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("arguments", nargs=-1, metavar="NAME SOURCE... TARGET")
@click.option("--from", "batch_file", metavar="FILE", type=click.Path(dir_okay=False),
              help="Create every [Overlay] of FILE (drop-in syntax), all of them or none.")
@click.option("--read-only", is_flag=True, help="Lay SOURCE over TARGET without making TARGET writable.")
@size_option
@click.option("--keep-ownership", is_flag=True, help="Keep SOURCE's owners instead of making the copy root:root.")
@click.option("--allow-setuid", is_flag=True,
              help="Accept setuid/setgid files and file capabilities in SOURCE: they will run with privileges.")
@click.option("--allow-world-writable", is_flag=True, help="Accept world-writable files and dirs in SOURCE.")
@private_option
@ask_option
@json_option
def apply(arguments: tuple[str, ...], batch_file: str | None, read_only: bool, size: str, keep_ownership: bool,
          allow_setuid: bool, allow_world_writable: bool, private: bool, no_ask_password: bool, as_json: bool) -> None:
    """Copy SOURCE (a file or a tree) and lay it over TARGET as overlay NAME.

    A file SOURCE appears as TARGET/basename; a directory's entries appear in
    TARGET. SOURCE is read with the caller's rights and copied at once: later
    edits to it do not show. The copy is owned by root:root unless
    --keep-ownership. Several SOURCEs are stacked as layers in the order
    given: the last one is on top, and its files win.

    With --from FILE, every [Overlay] section of FILE (the keys of a drop-in,
    sdoverlay.d(5); Name= and Target= required, no Source= for an unlock) is
    created, or none: on the first failure those created are removed again.
    """
    if batch_file is not None:
        if (arguments or read_only or keep_ownership or allow_setuid or allow_world_writable or private
                or size != DEFAULT_SIZE):
            raise click.UsageError("--from takes the overlays and their options from FILE only")
        _apply_batch(batch_file, no_ask_password, as_json)
        return
    if len(arguments) < 3:
        raise click.UsageError("apply takes NAME SOURCE... TARGET, or --from FILE")
    name, sources, target = arguments[0], arguments[1:-1], arguments[-1]
    if any(SOURCE_SEPARATOR in each for each in sources):
        _die(InvalidInput(f"source {next(e for e in sources if SOURCE_SEPARATOR in e)} contains "
                          f"'{SOURCE_SEPARATOR}', which overlay mount options cannot carry"))
    source = SOURCE_SEPARATOR.join(sources)
    request = {"name": name, "target": target, "source": source}
    status = _request("apply", request, "Apply", [name, source, target], dict(
        read_only=read_only, size=size, keep_ownership=keep_ownership, allow_setuid=allow_setuid,
        allow_world_writable=allow_world_writable, private=private, on_behalf_of=_on_behalf_of()),
        not no_ask_password)
    _emit(status, as_json, "applied")


def _apply_batch(path: str, no_ask_password: bool, as_json: bool) -> None:
    from sdoverlay import ini

    request = {"name": "", "target": "", "source": f"--from {path}"}
    try:
        text = ini.read_regular_file(path)  # with the caller's rights, a FIFO or /dev/zero refused
    except (OSError, ValueError) as error:
        _die(InvalidInput(f"cannot read {path}: {getattr(error, 'strerror', None) or error}"))
    created = _request("apply", request, "ApplyBatch", [text], dict(on_behalf_of=_on_behalf_of()),
                       not no_ask_password)
    if as_json:
        _print_json(created)
        return
    for status in created:
        _emit(status, False, "applied" if status["source"] else "unlocked")
    if OUTPUT.legend:
        _say(f"{len(created)} overlay(s) created.")


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("target", default="/usr")
@click.option("--name", help="Overlay name; default: derived from TARGET (/usr -> usr).")
@click.option("--hotfix", is_flag=True,
              help="Persistent: writes survive reboots (kept in /var/lib/sdoverlay) until the overlay is removed.")
@size_option
@private_option
@ask_option
@json_option
def unlock(target: str, name: str | None, hotfix: bool, size: str, private: bool, no_ask_password: bool,
           as_json: bool) -> None:
    """Make TARGET (default /usr) writable with an empty overlay; writes go to memory."""
    # No --name: the service derives it (taking a suffix where a detached
    # overlay holds the name); the derived name is what the audit trail shows.
    if name == "":
        _die(InvalidInput(f"invalid overlay name '': {paths.check_name(name)}"))
    chosen = name if name is not None else paths.default_unlock_name(os.path.realpath(target) if target else "")
    status = _request("unlock", {"name": chosen, "target": target}, "Unlock", [target, name or ""], dict(
        size=size, hotfix=hotfix, private=private, on_behalf_of=_on_behalf_of()), not no_ask_password)
    _emit(status, as_json, "unlocked")


@cli.command(name="list", epilog=EXIT_CODES_HELP)
@click.option("--user", "uid", type=int, help="Only overlays owned by this uid.")
@json_option
def list_(uid: int | None, as_json: bool) -> None:
    """List overlays, with their state and memory use."""
    import gc

    # Each overlay's status is some hundred objects, none in a reference
    # cycle, which the cyclic collector went over again and again: 3.6-4.1 ms
    # of collections in `list --json` at 500 overlays, and 500 overlays
    # listed 3.1 ms sooner without them (issue 9, benchmarks/README.md). A
    # list is bounded work: it runs without the collector.
    gc.disable()
    try:
        _list(uid, as_json)
    finally:
        gc.enable()


def _list(uid: int | None, as_json: bool) -> None:
    from sdoverlay.status import list_all

    found = [s for s in _on_bus(list_all) if uid is None or s.spec.owner_uid == uid]
    if as_json:
        _print_json([s.to_json() for s in found])
        return
    legend = ("NAME", "TARGET", "SOURCE", "OWNER", "MODE", "STATE", "USED", "LIMIT", "CREATED", "DROP-IN")
    rows = [legend]
    for status in found:
        spec = status.spec
        rows.append((
            spec.name, spec.target, spec.source or "-", str(spec.owner_uid),
            ("ro" if spec.read_only else "rw") + (",private" if spec.private else "")
            + (",persistent" if spec.persistent else ""), status.state,
            sizes.human_bytes(status.area_used_bytes), sizes.human_bytes(status.size_limit_bytes), spec.created_at,
            spec.dropin or "-",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(legend))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
             for row in (rows if OUTPUT.legend else rows[1:])]
    lines += [f"{status.spec.name}: {status.state}: {status.problem}" for status in found if status.problem]
    if OUTPUT.legend:
        lines += ["", f"{len(found)} overlay(s)."]
    _show(lines)


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("name", shell_complete=_overlay_names)
@json_option
def status(name: str, as_json: bool) -> None:
    """Show everything about overlay NAME: its spec, units, memory, what was
    written, who uses its target, its drop-in and its last audit events."""
    from sdoverlay.details import details

    found = _on_bus(lambda systemd: details(systemd, name))
    if as_json:
        _print_json(found)
        return

    def size(count: int | None) -> str:
        return sizes.human_bytes(count)

    mode = (("read-only" if found["read_only"] else "writable") + (", private" if found["private"] else "")
            + (", persistent" if found["persistent"] else ""))
    rows = [
        ("State", found["state"] + (f" ({found['problem']})" if found["problem"] else "")),
        ("Source", found["source"] or "-"),
        ("Mode", f"{mode}, {found['kind']} kind" + (", lazy unmount" if found["lazy_unmount"] else "")),
        ("Owner", f"uid {found['owner_uid']}, session {found['session'] or '-'}, created {found['created_at']}"),
        ("Memory", f"{size(found['area_used_bytes'])} of {size(found['size_limit_bytes'])} "
                   f"(content {size(found['content_bytes'])}, written {size(found['written_bytes'])})"),
        ("Changed", "-" if found["changed_paths"] is None else f"{found['changed_paths']} path(s)"),
        ("Used by", ", ".join(f"{user['pid']} ({user['command']})" + (f" in {user['unit']}" if user["unit"] else "")
                              for user in found["used_by"]) or "-"),
        ("Drop-in", found["dropin"] or "-"),
    ]
    rows += [("Units" if index == 0 else "", f"{unit['unit']} {unit['active']}")
             for index, unit in enumerate(found["unit_states"])]
    lines = [f"{found['name']} - overlay on {found['target']}"]
    lines += [f"{label:>9}: {value}" if label else f"{'':>9}  {value}" for label, value in rows]
    if found["events"]:
        lines.append("")
    lines += [f"{entry['time']}  {entry['event']} {entry['verb']} uid={entry['caller_uid']} {entry['result']}"
              for entry in found["events"]]
    _show(lines)


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("name", shell_complete=_overlay_names)
@force_option
@ask_option
@json_option
def reset(name: str, force: bool, no_ask_password: bool, as_json: bool) -> None:
    """Discard what was written to overlay NAME; keep its applied content."""
    status = _request("reset", {"name": name}, "Reset",
                      [name], dict(force=force, on_behalf_of=_on_behalf_of()), not no_ask_password)
    _emit(status, as_json, "reset")


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("name", required=False, shell_complete=_overlay_names)
@click.option("--all", "every", is_flag=True,
              help="Remove every overlay of yours; with --user, that owner's; with --force and no --user, all.")
@click.option("--user", "uid", type=int, help="With --all: the overlays owned by this uid.")
@force_option
@ask_option
@json_option
def remove(name: str | None, every: bool, uid: int | None, force: bool, no_ask_password: bool, as_json: bool) -> None:
    """Unmount overlay NAME, free its memory and remove its units.

    If processes still use an overlay that is unmounted lazily (one on a
    mount point such as /usr, or one covering umount itself), it is detached:
    they are named, and it stays listed as 'detached' until they exit and its
    memory is freed. Where only leftovers of NAME remain (a command was
    killed), they are removed.

    --all removes each overlay of the caller's (another user's with --user
    UID and --force) one by one, goes on past one it cannot remove, says
    why for each, and exits with the first failure's code.
    """
    if every == (name is not None) or (uid is not None and not every):
        raise click.UsageError("remove takes NAME, or --all [--user UID]")
    if not every:
        outcome = _request("remove", {"name": name}, "Remove",
                           [name], dict(force=force, on_behalf_of=_on_behalf_of()), not no_ask_password)
        if as_json:
            _print_json(outcome)
        else:
            _say(_removed_text(name, outcome))
        return
    from sdoverlay import client
    from sdoverlay.status import list_all

    owner = uid if uid is not None else (None if force else (_on_behalf_of() or os.getuid()))
    names = [status.spec.name for status in _on_bus(list_all)
             if status.state != "detached" and (owner is None or status.spec.owner_uid == owner)]
    outcomes, failures = [], []
    for each in names:
        try:
            outcomes.append(_call_service("remove", {"name": each}, "Remove", [each], dict(
                force=force, on_behalf_of=_on_behalf_of()), not no_ask_password))
        except SdoverlayError as error:
            if isinstance(error, client.Interrupted):
                _die(error)  # Ctrl-C stops the loop; the removal in flight is the service's to finish
            failures.append(error)
            outcomes.append({"name": each, "removed": False, "error": error.message, "exit_code": int(error.exit_code)})
            _complain(error)
            continue
        if not as_json:
            _say(_removed_text(each, outcomes[-1]))
    if as_json:
        _print_json(outcomes)
    elif OUTPUT.legend:
        _say(f"{len(names) - len(failures)} of {len(names)} overlay(s) removed.")
    if failures:
        sys.exit(failures[0].exit_code)


def _removed_text(name: str, outcome: dict[str, Any]) -> str:
    from sdoverlay import holders

    if outcome["leftovers"]:
        return f"overlay {name!r} was gone; removed what was left of it: {', '.join(outcome['leftovers'])}"
    if outcome["detached"]:
        return (f"removed overlay {name!r} from {outcome['target']}; "
                + holders.detached_text(outcome["still_used_by"], outcome["held_bytes"]))
    return f"removed overlay {name!r} from {outcome['target']}"


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("name", shell_complete=_overlay_names)
@click.option("--rebase", is_flag=True,
              help="Lay a stale persistent overlay (made on another image) over this one, its writes kept.")
@force_option
@ask_option
@json_option
def persist(name: str, rebase: bool, force: bool, no_ask_password: bool, as_json: bool) -> None:
    """Make live overlay NAME persistent: it comes back at boot, with its writes.

    Writes its drop-in to /etc/sdoverlay.d/NAME.conf and keeps its content
    and writes under /var/lib/sdoverlay/NAME. Persisting it again changes
    nothing; after an interrupted persist it finishes the job. The drop-in
    records the image (the ostree commit, or os-release's IMAGE_VERSION):
    booted on another, the overlay is stale, not mounted, until removed or
    rebased (--rebase).
    """
    status = _request("persist", {"name": name}, "Persist", [name], dict(
        force=force, rebase=rebase or None, on_behalf_of=_on_behalf_of()), not no_ask_password)
    _emit(status, as_json, "rebased" if rebase else "persisted")


def _changes(name: str, force: bool, no_ask_password: bool) -> tuple[str, list[Any]]:
    """The service's diff of overlay NAME: its target, and its changes (sdoverlay.changes.Change)."""
    from sdoverlay import changes

    found = _query("Diff", [name], dict(force=force, on_behalf_of=_on_behalf_of()), not no_ask_password)
    return found["target"], [changes.change_from_json(entry) for entry in found["changes"]]


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("name", shell_complete=_overlay_names)
@click.option("--stat", "summary", is_flag=True, help="Only count the changes of each kind.")
@force_option
@ask_option
@json_option
def diff(name: str, summary: bool, force: bool, no_ask_password: bool, as_json: bool) -> None:
    """Show what overlay NAME changed against what its target shows without it.

    One line a path, as `git status --short`: A added, M modified (content,
    mode, owner or xattrs), D deleted, R replaced (another type, or a dir
    whose old entries are gone). An applied SOURCE's content counts as
    changes too. A renamed path is a D and an A.
    """
    from sdoverlay import changes

    _target, found = _changes(name, force, no_ask_password)
    if summary:
        counts = {kind: sum(1 for change in found if change.change == kind) for kind in changes.LETTERS}
        written = sum(change.size for change in found)
        if as_json:
            _print_json({**counts, "bytes": written})
        else:
            click.echo(", ".join(f"{count} {kind}" for kind, count in counts.items())
                       + f"; {sizes.human_bytes(written)} in files added, modified or replaced")
        return
    if as_json:
        _print_json([change.to_json() for change in found])
        return
    _show([f"{changes.LETTERS[change.change]} {change.path}" for change in found])


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("name", shell_complete=_overlay_names)
@click.argument("destination")
@click.option("--format", "image_format", type=click.Choice(["directory", "raw"]), default="directory",
              show_default=True, help="A directory, or a raw disk image (DDI) built with systemd-repart (255+).")
@click.option("--version", "version", metavar="V", help="The extension's own version (SYSEXT_VERSION_ID=).")
@click.option("--ignore-deletions", is_flag=True,
              help="Export although the overlay deleted paths (an extension cannot delete; they are left out).")
@force_option
@ask_option
@json_option
def export(name: str, destination: str, image_format: str, version: str | None, ignore_deletions: bool, force: bool,
           no_ask_password: bool, as_json: bool) -> None:
    """Write what overlay NAME changed as a system extension in DESTINATION.

    DESTINATION (a new directory; its base name names the extension) is what
    `systemd-sysext merge` takes from /var/lib/extensions: the changed files
    under usr/ (or opt/) and an extension-release file matching this host.
    With --format=raw, DESTINATION (NAME.raw) is a disk image of the same.
    Only overlays on /usr or /opt can be exported. An extension cannot delete
    files: an overlay that deleted some is refused, with their list, unless
    --ignore-deletions.
    """
    from sdoverlay import export as exporting

    try:
        exporting.check_version(version)
    except InvalidInput as error:
        _die(error)
    target, found = _changes(name, force, no_ask_password)
    try:
        outcome = exporting.export(name, target, found, destination, version, ignore_deletions, image_format)
    except Exception as raised:  # noqa: BLE001 - one line, never a traceback
        _die(as_sdoverlay_error(raised))
    if as_json:
        _print_json(outcome)
        return
    skipped = f"; left out {len(outcome['ignored_deletions'])} deletion(s)" if outcome["ignored_deletions"] else ""
    _say(f"exported overlay {name!r} to {outcome['destination']}: extension {outcome['extension']!r}, "
         f"{outcome['paths']} path(s), {sizes.human_bytes(outcome['bytes'])}{skipped}")


@cli.command(epilog="Exit status: COMMAND's own (128 + N if a signal N ended it; 127 if it could not be "
                    "started). Before COMMAND starts, sdoverlay's codes: " + EXIT_CODES_HELP[len("Exit codes: "):],
             context_settings={"ignore_unknown_options": True})
@click.argument("name", shell_complete=_overlay_names)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@force_option
@ask_option
def run(name: str, command: tuple[str, ...], force: bool, no_ask_password: bool) -> None:
    """Run COMMAND where private overlay NAME is writable: sdoverlay run NAME -- COMMAND...

    COMMAND runs as the caller, with the caller's working dir, environment,
    stdin, stdout and stderr, in a mount namespace of its own in which NAME's
    target is writable; every other process keeps a read-only view of it
    and sees what COMMAND writes. Ctrl-C, SIGTERM and SIGHUP are passed on
    to it. It runs in a transient unit (sdoverlay-run-NAME-PID.service),
    without a controlling terminal.
    """
    from sdoverlay import client

    try:
        outcome = client.run(name, list(command), client.options(force=force, on_behalf_of=_on_behalf_of()),
                             not no_ask_password)
    except Exception as raised:  # noqa: BLE001 - one line, never a traceback
        _die(as_sdoverlay_error(raised))
    sys.exit(outcome["exit_status"])


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("name", required=False, shell_complete=_overlay_names)
@json_option
def log(name: str | None, as_json: bool) -> None:
    """Show the audit history (all overlays, or NAME's) from the journal."""
    from sdoverlay import audit

    try:
        audit.check_readable()
    except SdoverlayError as error:
        _die(error)
    history = audit.read(name)
    if as_json:
        _print_json(history)
        return
    lines = []
    for entry in history:
        owner = f"uid={entry['owner_uid']}" if entry["owner_uid"] is not None else "uid=-"
        line = f"{entry['time']}  {entry['event']:8s} {entry['verb']:6s} {entry['name'] or '-'}  {entry['target'] or '-'}  {owner}"
        if entry["result"] != "ok":
            line += f"  {entry['result']}"
        lines.append(line)
    if not history:
        lines.append("no sdoverlay events in the journal" + (f" for {name!r}" if name else ""))
    elif OUTPUT.legend:
        lines += ["", f"{len(history)} event(s)."]
    _show(lines)


@cli.command(epilog=EXIT_CODES_HELP)
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@click.option("--remove-orphaned-state", is_flag=True,
              help="Also remove /var/lib/sdoverlay/NAME dirs that no drop-in names (they may hold someone's writes).")
@ask_option
@json_option
def gc(dry_run: bool, remove_orphaned_state: bool, no_ask_password: bool, as_json: bool) -> None:
    """Remove what belongs to no overlay: stale hold units, failed units of
    ours, unmounted area dirs, partial copies left by killed commands.

    A live overlay is never touched. Orphaned persistent state is reported,
    and removed only with --remove-orphaned-state.
    """
    results = _request("gc", {}, "CollectGarbage", [], dict(
        dry_run=dry_run, remove_orphaned_state=remove_orphaned_state), not no_ask_password)
    if as_json:
        _print_json(results)
        return
    verbs_text = {"removed": "removed", "would-remove": "would remove", "kept": "left alone"}
    for result in results:
        _say(f"{verbs_text[result['action']]}: {result['what']} ({result['reason']})")
    removed = sum(1 for result in results if result["action"] != "kept")
    if OUTPUT.legend:
        _say(f"{removed} item(s) {'to remove' if dry_run else 'removed'}, {len(results) - removed} left alone.")
