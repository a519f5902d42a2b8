"""systemd system generator: overlays from drop-in files, at boot and on daemon-reload.

    sdoverlay-generator NORMAL_DIR [EARLY_DIR LATE_DIR]
    python3 -m sdoverlay.generator NORMAL_DIR [EARLY_DIR LATE_DIR]

Reads *.conf from /etc/sdoverlay.d, /run/sdoverlay.d, /usr/local/lib/sdoverlay.d
and /usr/lib/sdoverlay.d with systemd's rules (one namespace of file names,
sorted; the first dir wins for a name; a /dev/null link or an empty file
masks). Each drop-in becomes the same units `sdoverlay apply` creates
(sdoverlay/units), written to NORMAL_DIR with SourcePath= pointing at the
drop-in (the content unit as an instance of one template, its settings in
the instance's drop-in: units.generated_files), and pulled in by
local-fs.target.wants/ or started by the boot burst (sdoverlay.burst).

As man:systemd.generator(7) asks: no D-Bus, nothing assumed of /var, log to
/dev/kmsg, deterministic output, and a broken drop-in is logged and
skipped: it never fails the boot or the other drop-ins. The exit code is 0
unless the generator itself is called wrongly.
"""

from __future__ import annotations

import os
import sys
import time

from sdoverlay import config, dropin, imageid, ini, kinds, mountinfo, paths, units, validate
from sdoverlay.dropin import DropinError
from sdoverlay.errors import SdoverlayError
from sdoverlay.sizes import DEFAULT_SIZE
from sdoverlay.spec import SOURCE_SEPARATOR, OverlaySpec

DROPIN_DIRS = ["/etc/sdoverlay.d", "/run/sdoverlay.d", "/usr/local/lib/sdoverlay.d", "/usr/lib/sdoverlay.d"]
WANTED_BY = "local-fs.target"

REPORT_UNIT = "sdoverlay-generator-report.service"
# In the generator's own output dir, one file a stale overlay (its drop-in
# made for another image): what `list` and `status` show of it.
STALE_DIR = "sdoverlay-stale"


class StaleDropin(Exception):
    """A drop-in persist wrote on another image than this boot's."""

    def __init__(self, spec: OverlaySpec, made_for: str) -> None:
        super().__init__(spec.name)
        self.spec = spec
        self.made_for = made_for
_JOURNAL_SOCKET = "/run/systemd/journal/socket"


def _log(message: str, priority: int = 3) -> None:
    """To the kernel log, as early boot has no journal yet; where there is no
    /dev/kmsg (a container), to the journal if it runs (daemon-reload); else
    to stderr. At boot in a container the report unit carries it instead."""
    line = f"sdoverlay-generator[{os.getpid()}]: {message}"
    try:
        # Never O_CREAT: in a container /dev is a tmpfs without kmsg, and
        # open(..., "w") made a regular file /dev/kmsg that swallowed every
        # message from then on.
        kmsg = os.open("/dev/kmsg", os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            os.write(kmsg, f"<{priority}>{line}\n".encode())
        finally:
            os.close(kmsg)
        return
    except OSError:
        pass
    if os.path.exists(_JOURNAL_SOCKET):
        try:
            send_to_journal({"MESSAGE": message, "PRIORITY": str(priority), "SYSLOG_IDENTIFIER": "sdoverlay-generator"})
            return
        except OSError:
            pass
    sys.stderr.write(line + "\n")


def journal_datagram(fields: dict[str, str]) -> bytes:
    """FIELDS as one journal entry in journald's native protocol (systemd's
    docs/JOURNAL_NATIVE_PROTOCOL.md): a line KEY=VALUE each, or where the
    value has a newline, KEY, a newline, the value's length (64-bit little
    endian), the value and a newline."""
    datagram = []
    for key, value in fields.items():
        data = value.encode("utf-8", "surrogateescape")
        if b"\n" in data:
            datagram += [key.encode(), b"\n", len(data).to_bytes(8, "little"), data, b"\n"]
        else:
            datagram += [key.encode(), b"=", data, b"\n"]
    return b"".join(datagram)


def send_to_journal(fields: dict[str, str]) -> None:
    """FIELDS to journald, with the standard library's socket, not
    python-systemd: the installed generator runs without `site`
    (systemd/sdoverlay-generator.in), so it imports nothing from outside
    the standard library and the package."""
    import socket  # only here: a generator's start-up time counts

    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as journal:
        journal.sendto(journal_datagram(fields), _JOURNAL_SOCKET)


def _write_report(normal_dir: str, problems: list[str]) -> None:
    """A oneshot unit that repeats the generator's complaints into the journal
    once it runs, for boots where /dev/kmsg was not there to take them."""
    lines = [
        "# Written by sdoverlay-generator: drop-ins it skipped at its last run.",
        "[Unit]",
        "Description=sdoverlay: report drop-ins the generator skipped",
        "DefaultDependencies=no",
        "After=systemd-journald.socket",
        "",
        "[Service]",
        "Type=oneshot",
        "SyslogIdentifier=sdoverlay-generator",
    ]
    lines += [f"ExecStart=/usr/bin/echo {units.exec_quote(problem)}" for problem in problems]
    _write(normal_dir, REPORT_UNIT, "\n".join(lines) + "\n")
    _want(normal_dir, REPORT_UNIT, "sysinit.target")


def parse_dropin(path: str, allowed_roots: tuple[str, ...], mounts: list[mountinfo.MountEntry],
                 image: str = "") -> OverlaySpec:
    """The overlay a drop-in describes; DropinError says why it cannot be
    used, StaleDropin that it was made on another image than IMAGE."""
    try:
        entries = ini.parse(ini.read_regular_file(path))
        modified = os.stat(path).st_mtime
    except OSError as error:
        raise DropinError(error.strerror or str(error)) from error
    except ValueError as error:  # not a regular file, too large, bad UTF-8, bad syntax
        raise DropinError(str(error)) from error
    values = dropin.values(entries)
    name = values.get("Name") or os.path.basename(path).removesuffix(".conf")
    source = values.get("Source") or None
    persistent = dropin.boolean(values, "Persistent")
    size = values.get("Size", DEFAULT_SIZE)
    dropin.check(values)
    try:
        for each in source.split(SOURCE_SEPARATOR) if source else []:
            validate.absolute_path_text(each, "Source=")
        validate.name(name)
        validate.size(size)
        # SOURCE is not checked here: it may live on a file system that is
        # not mounted yet. The content unit checks it (RequiresMountsFor=).
        target = validate.target(values["Target"], allowed_roots)
    except SdoverlayError as error:
        raise DropinError(error.message) from error
    flags = dropin.flags(values)
    spec = OverlaySpec(
        name=name,
        target=target,
        source=source,
        size=size,
        owner_uid=0,
        # The drop-in's own time, so that the output is deterministic.
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(modified)),
        persistent=persistent,
        dropin=path,
        **flags,
        **kinds.mount_plan(target, mountinfo.is_foreign_mount_point(target, mounts), flags["private"]),
    )
    made_for = values.get("Image", "")
    if made_for and image and made_for != image:
        raise StaleDropin(spec, made_for)
    return spec


def _write(directory: str, name: str, text: str) -> None:
    """NAME: a file in DIRECTORY, or in a subdir of it (a unit's drop-in dir)."""
    path = os.path.join(directory, name)
    if "/" in name:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as file:
        file.write(text)


def generate(normal_dir: str, dropin_dirs: list[str] = DROPIN_DIRS, python: str = sys.executable) -> list[OverlaySpec]:
    """Write the units of every usable drop-in to NORMAL_DIR; return their specs."""
    try:
        allowed_roots = config.load().allowed_roots
    except SdoverlayError as error:
        _log(f"{error.message}; using the default allowed roots")
        allowed_roots = config.Config().allowed_roots
    mounts = mountinfo.read()
    image = imageid.current()
    generated: list[OverlaySpec] = []
    by_name: dict[str, OverlaySpec] = {}
    by_target = paths.TargetIndex()
    problems: list[str] = []
    for path in ini.layered_files(dropin_dirs, ".conf"):
        try:
            spec = parse_dropin(path, allowed_roots, mounts, image)
            if spec.name in by_name:
                raise DropinError(f"overlay name {spec.name!r} is used by {by_name[spec.name].dropin} already")
            other = by_target.overlapping(spec.target)
            if other is not None:
                raise DropinError(f"{spec.target} overlaps {other.target} of {other.dropin}")
        except DropinError as error:
            problems.append(f"{path}: {error}; skipped")
            _log(problems[-1])
            continue
        except StaleDropin as stale:
            # Said by the report unit only, once a boot: a reload must not repeat it.
            problems.append(f"{path}: overlay {stale.spec.name} was made on {imageid.describe(stale.made_for)}, and "
                            f"this boot runs {imageid.describe(image)}: not mounted (stale); 'sdoverlay remove "
                            f"{stale.spec.name}' removes it, 'sdoverlay persist --rebase {stale.spec.name}' lays it "
                            "over this image")
            _write(normal_dir, f"{STALE_DIR}/{stale.spec.name}",
                   "\n".join((stale.made_for, image, stale.spec.metadata_options)) + "\n")
            continue
        try:
            for name, text in units.generated_files(spec, python):
                _write(normal_dir, name, text)
            # One in the burst is started by the burst's unit (sdoverlay.burst).
            if not spec.in_burst:
                _want(normal_dir, spec.overlay_unit)
        except OSError as error:
            problems.append(f"{path}: cannot write its units: {error}; skipped")
            _log(problems[-1])
            continue
        generated.append(spec)
        by_name[spec.name] = spec
        by_target.add(spec.target, spec)
    if generated:
        template = units.content_template()
        _write(normal_dir, template.name, template.text)
    in_burst = [spec for spec in generated if spec.in_burst]
    if in_burst:
        burst_unit = units.render_burst(in_burst, python)
        _write(normal_dir, burst_unit.name, burst_unit.text)
        _want(normal_dir, burst_unit.name)
    if problems:
        _write_report(normal_dir, problems)
    return generated


def _want(normal_dir: str, unit: str, target: str = WANTED_BY) -> None:
    """UNIT is started on the way to TARGET."""
    wants = os.path.join(normal_dir, f"{target}.wants")
    os.makedirs(wants, exist_ok=True)
    link = os.path.join(wants, unit)
    if not os.path.lexists(link):
        os.symlink(f"../{unit}", link)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 3):
        print("usage: sdoverlay-generator NORMAL_DIR [EARLY_DIR LATE_DIR]", file=sys.stderr)
        return 2
    generate(args[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
