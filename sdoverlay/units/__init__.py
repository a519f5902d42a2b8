"""The one definition of what an overlay's units look like.

The unit files in this directory are templates with string.Template
placeholders; `context` computes every value from an OverlaySpec. The CLI
turns the rendered text into transient-unit properties (sdoverlay.unitfile);
the generator writes it as it is. Either way the units are the same.

string.Template rather than jinja2: the generator runs on every boot and
daemon-reload, serially, and importing jinja2 alone costs 33-50 ms here,
several times the rest of the generator (see benchmarks/README.md). The
templates use one form of string.Template's placeholders, ${name}, and
`substitute` fills them in without importing `string`: its Template class
compiles a regular expression on import, and re with enum were a quarter of
the generator's run (issue 9); tests/test_logic.py checks that every
template renders as string.Template renders it. A line whose value is empty
after substitution (`SourcePath=` of an overlay without a drop-in, say) is
left out.
"""

from __future__ import annotations

import os
import stat
import sys

from sdoverlay import events, paths
from sdoverlay.record import record
from sdoverlay.spec import BURST_UNIT, CONTENT_TEMPLATE_UNIT, METADATA_FIELD, OverlaySpec

_TEMPLATES = os.path.dirname(__file__)
# The dir the sdoverlay package was imported from (boot_program).
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(_TEMPLATES)))
_templates: dict[str, str] = {}
# What needs no quoting for sh (shlex.quote's set: shlex imports re) and in
# a word of a unit file's list settings.
_PLAIN_CHARS = paths.WORD_CHARS | frozenset("@%+=:,./-")


def substitute(template: str, values: dict[str, str]) -> str:
    """string.Template(TEMPLATE).substitute(VALUES) for templates whose only
    placeholders are ${name}; any other '$' is refused (ValueError), so what
    this accepts renders exactly as string.Template renders it."""
    first, *pieces = template.split("${")
    rendered = [first]
    for piece in pieces:
        name, closed, rest = piece.partition("}")
        if not closed or not (name.isidentifier() and name.isascii()):
            raise ValueError(f"invalid placeholder ${{{piece[:20]}")
        rendered += [values[name], rest]
    if any("$" in literal for literal in rendered[::2]):
        raise ValueError("a '$' that is not a ${name} placeholder")
    return "".join(rendered)


def sh_quote(word: str) -> str:
    """WORD as one word for sh: what shlex.quote returns."""
    if word and _PLAIN_CHARS.issuperset(word):
        return word
    return "'" + word.replace("'", "'\"'\"'") + "'"


def unit_escape(value: str) -> str:
    """Quote '%' so systemd's specifier expansion leaves the value as it is."""
    return value.replace("%", "%%")


def word_quote(word: str) -> str:
    """One word of a space-separated list setting (RequiresMountsFor=,
    LogExtraFields=): systemd reads those with extract_first_word(UNQUOTE),
    so a word with white space, quotes or backslashes goes in double quotes
    with '\\' and '"' escaped, and '%' is doubled (specifiers)."""
    if word and _PLAIN_CHARS.issuperset(word):
        return unit_escape(word)
    return unit_escape('"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"')


def exec_quote(argument: str) -> str:
    """One argument of an Exec*= line: quoted as a word, and '$' doubled,
    since systemd expands $VARIABLES in command lines (transient ones too)."""
    return word_quote(argument).replace("$", "$$")


def shell_command(script: str) -> str:
    """An Exec*= line that runs SCRIPT (its words quoted for sh) with /bin/sh."""
    return "/bin/sh -c " + exec_quote(script)


def word_list(words: list[str]) -> str:
    return " ".join(word_quote(word) for word in words)


@record
class RenderedUnit:
    name: str
    text: str


def _template(name: str) -> str:
    if name not in _templates:
        with open(os.path.join(_TEMPLATES, name), encoding="utf-8") as file:
            _templates[name] = file.read()
    return _templates[name]


def _writable_layer_commands(spec: OverlaySpec) -> dict[str, str]:
    """The content unit's commands that create missing upper and work dirs.

    The upper root takes TARGET's owner and mode: the merged root of an
    overlay shows the topmost layer's root, and applying an overlay must not
    change TARGET's own permissions. It is created only where missing, so a
    persistent upper keeps what was done to the merged root itself.
    """
    if spec.read_only:
        return {"make_persistent_dir": "", "make_upper": "", "make_work": ""}
    target = os.stat(spec.target)
    make_upper = (
        f"test -d {spec.upper_dir} || exec /usr/bin/install -d -m {stat.S_IMODE(target.st_mode):04o} "
        f"-o {target.st_uid} -g {target.st_gid} {spec.upper_dir}"
    )
    return {
        "make_persistent_dir": f"/usr/bin/install -d -m 0700 {spec.persistent_dir}" if spec.persistent else "",
        "make_upper": shell_command(make_upper),
        "make_work": f"/usr/bin/install -d -m 0700 {spec.work_dir}",
    }


def context(spec: OverlaySpec, python: str = sys.executable) -> dict[str, str]:
    """Every placeholder's value for SPEC; PYTHON runs sdoverlay.populate."""
    # Everything the content unit reads or writes, its own interpreter too.
    content_mounts = ([python, *spec.sources] if spec.source else []) + ([spec.persistent_dir] if spec.persistent else [])
    copy_source = ""
    if spec.source:
        # A content dir that exists is whole (populate renames it into place):
        # sh looks first, so a reset does not start Python (40 ms) for nothing.
        populate = f"{sh_quote(python)} -m sdoverlay.populate {sh_quote(spec.metadata_options)}"
        copy_source = shell_command(f"test -d {sh_quote(spec.content_dir)} || exec {populate}")
    writable_mounts = [spec.persistent_dir] if spec.persistent else []
    # Each value is escaped for the one kind of setting it is used in:
    # *_text for plain strings (Description=, Where=), *_word(s) for lists,
    # *_arg for command lines. TARGET and SOURCE may hold '$', ';', spaces
    # (SOURCE only) and non-ASCII (issue 7, item 7).
    return {
        "name": spec.name,
        "target_text": unit_escape(spec.target),
        "target_arg": exec_quote(spec.target),
        "area": spec.area,
        "area_unit": spec.area_unit,
        "content_unit": spec.content_unit,
        "overlay_unit": spec.overlay_unit,
        "dropin": unit_escape(spec.dropin),
        "area_options": unit_escape(spec.area_options),
        # Percent-encoded metadata has no white space, quotes or backslashes:
        # one word as it is, which sdoverlay.status finds on a line of its own.
        "metadata_field": unit_escape(f"{METADATA_FIELD}={spec.metadata_options}"),
        "overlay_options_text": unit_escape(spec.overlay_options),
        # A private overlay's mount is read-only from the start, which takes
        # the new mount API (sdoverlay.private), not mount(8).
        "mount_command": (f"{exec_quote(python)} -m sdoverlay.private mount {exec_quote(spec.metadata_options)}"
                          if spec.private else
                          f"/usr/bin/mount -t overlay overlay -o {exec_quote(spec.overlay_options)} "
                          f"{exec_quote(spec.target)}"),
        "copy_source": copy_source,
        **_writable_layer_commands(spec),
        **audit_commands(spec),
        "content_mounts": word_list(content_mounts),
        "target_mounts": word_list([spec.target, *writable_mounts]),
        "writable_mounts": word_list(writable_mounts),
        "lazy_unmount": "yes" if spec.lazy_unmount else "no",
        # After a boot's burst (sdoverlay.burst), skipped where it mounted already.
        "burst_unit": BURST_UNIT if spec.in_burst else "",
        "unless_area_mounted": "!" + spec.area if spec.in_burst else "",
        "unless_target_mounted": "!" + unit_escape(spec.target) if spec.in_burst else "",
        "lazy_flag": "-l " if spec.lazy_unmount else "",
    }


def audit_commands(spec: OverlaySpec) -> dict[str, str]:
    """The content unit's audit trail: the overlay's fields on everything its
    processes log (LogExtraFields=), and a record when its units start and
    stop, written by the unit itself with logger(1). An overlay started by a
    killed `apply`, at boot, or taken down behind sdoverlay's back (stopped
    with systemctl, unmounted by hand, moved: the content unit is StopWhenUnneeded=)
    is so traceable in `sdoverlay log` (issue 7, item 5)."""
    fields = {name: value for name, value in events.overlay_fields(spec).items() if value}
    return {
        "log_fields": word_list([f"{name}={value}" for name, value in fields.items()]),
        "record_started": _record_command(spec, "started"),
        "record_stopped": _record_command(spec, "stopped"),
    }


def _record_command(spec: OverlaySpec, event: str) -> str:
    # sh_quote quotes each line for sh; shell_command the script for systemd.
    entry = events.unit_event_entry(spec, event)
    lines = " ".join(sh_quote(line) for line in entry)
    return shell_command(f"printf '%s\\n' {lines} | /usr/bin/logger --journald")


def _render(template: str, values: dict[str, str]) -> str:
    # One substitution over the whole text; then a setting left without a
    # value is an optional one with nothing to say (the templates have no
    # empty settings of their own: tests/test_logic.py checks).
    lines = []
    for line in substitute(_template(template), values).splitlines():
        key, sep, value = line.partition("=")
        if sep and not value.strip() and not key.lstrip().startswith("#"):
            continue
        lines.append(line)
    return "\n".join(lines) + "\n"


def render(spec: OverlaySpec, python: str = sys.executable) -> list[RenderedUnit]:
    """SPEC's units in start order: area, content, overlay."""
    values = context(spec, python)
    return [
        RenderedUnit(spec.area_unit, _render("area.mount", values)),
        RenderedUnit(spec.content_unit, _render("content.service", values)),
        RenderedUnit(spec.overlay_unit, _render(f"overlay.{spec.kind}", values)),
    ]


# The name of a content unit's drop-in, in its dir (generated_files).
CONTENT_DROPIN = "overlay.conf"


def generated_files(spec: OverlaySpec, python: str = sys.executable) -> list[tuple[str, str]]:
    """What the generator writes for SPEC, a drop-in's overlay: each file's
    path in the generator's output dir, and its text. The area and overlay
    units are unit files; the content unit is an instance of
    CONTENT_TEMPLATE_UNIT (content_template()) whose drop-in holds what
    render() made of it. So a drop-in's overlay adds two unit files, not
    three, to what a first boot's preset pass reads (~1 ms each)."""
    area, content, overlay = render(spec, python)
    return [(area.name, area.text), (f"{content.name}.d/{CONTENT_DROPIN}", content.text), (overlay.name, overlay.text)]


def content_template() -> RenderedUnit:
    """The template of the content units the generator writes (generated_files)."""
    return RenderedUnit(CONTENT_TEMPLATE_UNIT, _template("content@.service"))


def render_hold(spec: OverlaySpec) -> RenderedUnit:
    """The transient unit that pins SPEC's area while the overlay is not up."""
    return RenderedUnit(spec.hold_unit, _render("hold.service", context(spec)))


def render_detached(spec: OverlaySpec, mount_id: int, python: str = sys.executable) -> RenderedUnit:
    """The transient unit that keeps SPEC's area until its lazily detached
    overlay (mount MOUNT_ID) is released, then unmounts it."""
    values = {**context(spec, python), "python": exec_quote(python), "detached_mount_id": str(mount_id)}
    return RenderedUnit(spec.detached_unit, _render("detached.service", values))


def boot_program(python: str, module: str) -> list[str]:
    """The command that runs MODULE's main(sys.argv[1:]) with PYTHON, for a
    program on the way to local-fs.target, whose start-up is boot time:
    `-I -S -c` and an import, not `-m`. -S skips `site` (2.5-2.8 ms on
    Debian 12 and 13) and the import skips runpy (2.8 ms, with
    importlib.util and contextlib): the burst's start, from its fork to
    its main(), went from 13.4 to 10.3 ms in boots of the test bed (issue
    9, benchmarks/README.md). Without `site` the interpreter finds the
    package where this one was imported from, appended after the standard
    library as `site` would put it; so what MODULE imports must be the
    standard library's and the package's only
    (tests/test_generator.py)."""
    code = (f"import sys; sys.path.append({_PACKAGE_PARENT!r}); "
            f"from {module} import main; sys.exit(main(sys.argv[1:]))")
    return [python, "-I", "-S", "-c", code]


def render_burst(specs: list[OverlaySpec], python: str = sys.executable) -> RenderedUnit:
    """The boot burst's unit (sdoverlay.burst) for SPECS, the overlays of
    drop-ins of the mount kind; PYTHON runs sdoverlay.burst."""
    needed = sorted({path for spec in specs for path in
                     [os.path.dirname(spec.target), *spec.sources,
                      *([spec.persistent_dir] if spec.persistent else [])]})
    command = [*boot_program(python, "sdoverlay.burst"), *(spec.metadata_options for spec in specs)]
    return RenderedUnit(BURST_UNIT, _render("burst.service", {
        "needed_mounts": word_list(needed),
        "burst_command": " ".join(exec_quote(word) for word in command),
    }))
