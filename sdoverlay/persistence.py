"""Overlays that survive a reboot: drop-ins in /etc/sdoverlay.d, upper dirs in /var/lib/sdoverlay.

A persistent overlay is described by a drop-in; the generator
(sdoverlay.generator) turns it into units at boot and on daemon-reload, so
`persist` and `unlock --hotfix` write a drop-in, reload systemd and start
the generated units, and `remove` takes the drop-in away again.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from sdoverlay import imageid, ini, mountinfo, overlays, paths
from sdoverlay.bus import Systemd
from sdoverlay.errors import Conflict, NotFound, OperationFailed, SdoverlayError
from sdoverlay.dropin import SECTION
from sdoverlay.generator import DROPIN_DIRS
from sdoverlay.paths import PERSISTENT_ROOT
from sdoverlay.status import OverlayStatus
from sdoverlay.spec import SOURCE_SEPARATOR, OverlaySpec

ADMIN_DIR = DROPIN_DIRS[0]  # /etc/sdoverlay.d: the administrator's
RUNTIME_DIR = DROPIN_DIRS[1]  # /run/sdoverlay.d


# The first line of every drop-in sdoverlay writes; what `persist` and
# `remove` may take back as their own after a killed command.
ORIGIN_PREFIX = "# Written by `sdoverlay "
_PARTIAL_PREFIX = "."
_PARTIAL_SUFFIX = ".partial"


def dropin_path(name: str) -> str:
    return f"{ADMIN_DIR}/{name}.conf"


def partial_dir(name: str) -> str:
    """Where persist copies NAME's content and writes before they are whole."""
    return f"{PERSISTENT_ROOT}/{_PARTIAL_PREFIX}{name}{_PARTIAL_SUFFIX}"


def partial_name(entry: str) -> str | None:
    """NAME, if ENTRY (a name in /var/lib/sdoverlay) is NAME's partial copy."""
    if entry.startswith(_PARTIAL_PREFIX) and entry.endswith(_PARTIAL_SUFFIX):
        return entry[len(_PARTIAL_PREFIX):-len(_PARTIAL_SUFFIX)]
    return None


def dropin_for(name: str) -> str | None:
    """The drop-in that describes overlay NAME in any drop-in dir, if any
    (by file name, or by a Name= inside), masked ones not counted."""
    for path in ini.layered_files(DROPIN_DIRS, ".conf"):
        if os.path.basename(path) == f"{name}.conf":
            return path
        try:
            text = ini.read_regular_file(path)
        except (OSError, ValueError):
            continue
        if f"\nName={name}\n" in f"\n{text}":
            return path
    return None


def written_by_sdoverlay(path: str) -> bool:
    try:
        return ini.read_regular_file(path).startswith(ORIGIN_PREFIX)
    except (OSError, ValueError):
        return False


def dropin_text(spec: OverlaySpec, origin: str) -> str:
    def yes_no(value: bool) -> str:
        return "yes" if value else "no"

    lines = [origin, f"[{SECTION}]", f"Name={spec.name}", f"Target={spec.target}"]
    if spec.source is not None:
        lines.append(f"Source={spec.source}")
    lines += [
        f"ReadOnly={yes_no(spec.read_only)}",
        f"Size={spec.size}",
        f"Persistent={yes_no(spec.persistent)}",
        f"KeepOwnership={yes_no(spec.keep_ownership)}",
        f"AllowSetuid={yes_no(spec.allow_setuid)}",
        f"AllowWorldWritable={yes_no(spec.allow_world_writable)}",
    ]
    if spec.private:
        lines.append("Private=yes")
    image = imageid.current()
    if image:
        # The image it was made on: on another (an upgrade) it is stale, not mounted.
        lines.append(f"Image={image}")
    return "\n".join(lines) + "\n"


def write_dropin(spec: OverlaySpec, origin: str) -> None:
    """Write SPEC's drop-in whole or not at all (a temporary file renamed into place)."""
    if os.path.lexists(spec.dropin):
        raise Conflict(f"{spec.dropin} exists already")
    os.makedirs(ADMIN_DIR, 0o755, exist_ok=True)
    partial = spec.dropin + ".partial"
    with open(partial, "w", encoding="utf-8") as file:
        file.write(dropin_text(spec, origin))
        file.flush()
        os.fsync(file.fileno())
    os.rename(partial, spec.dropin)


def retire_dropin(path: str) -> None:
    """Take a drop-in away: delete it where it is the admin's or runtime's,
    and mask the name with a /dev/null link in /etc where a vendor dir
    (/usr/local/lib, /usr/lib) still has a file of that name."""
    name = os.path.basename(path)
    if os.path.dirname(path) in (ADMIN_DIR, RUNTIME_DIR):
        os.unlink(path)
    if any(os.path.lexists(f"{directory}/{name}") for directory in DROPIN_DIRS[2:]):
        mask = f"{ADMIN_DIR}/{name}"
        if os.path.lexists(mask):
            os.unlink(mask)
        os.makedirs(ADMIN_DIR, 0o755, exist_ok=True)
        os.symlink("/dev/null", mask)


async def _activate(systemd: Systemd, spec: OverlaySpec, verb: str) -> OverlayStatus:
    """daemon-reload, so the generator writes SPEC's units; then start them."""
    await systemd.reload()
    if await systemd.load_state(spec.overlay_unit) == "not-found":
        raise OperationFailed(
            f"cannot {verb} overlay {spec.name!r}: systemd has no unit for {spec.dropin} after daemon-reload; "
            "is sdoverlay-generator installed (see README, 'make install')? Check the journal for its message"
        )
    failure = await overlays.start_overlay(systemd, spec)
    if failure is not None:
        raise OperationFailed(f"cannot {verb} overlay {spec.name!r}: {failure}")
    return await overlays.find(systemd, spec.name)


async def forget(systemd: Systemd, spec: OverlaySpec) -> list[str]:
    """After its units are stopped: drop a persistent overlay's drop-in and data, reload.

    Also what a killed `persist` of a transient overlay left: its own drop-in
    (sdoverlay's first line), the data that drop-in names, a partial copy."""
    try:
        await _forget_files(systemd, spec.name, spec.dropin, spec.persistent)
    except OSError as error:
        return [f"{error.strerror}: {error.filename}"]
    return []


def leftover_files(name: str) -> list[str]:
    """What forget_name would remove of NAME."""
    dropin = dropin_path(name) if written_by_sdoverlay(dropin_path(name)) else ""
    wanted = ((dropin, bool(dropin)), (paths.persistent_dir(name), bool(dropin)), (partial_dir(name), True))
    return [path for path, want in wanted if want and os.path.lexists(path)]


async def forget_name(systemd: Systemd, name: str) -> list[str]:
    """What `remove NAME` clears where no units of NAME are left: a drop-in
    sdoverlay wrote for it, the data that names, a partial copy. Returns
    what it removed."""
    return await _forget_files(systemd, name, "", False)


async def _forget_files(systemd: Systemd, name: str, dropin: str, persistent: bool) -> list[str]:
    """Retire DROPIN (or, where there is none, a drop-in sdoverlay wrote for
    NAME), remove NAME's data where it is PERSISTENT or a drop-in named it,
    and a partial copy; reload where a drop-in went. Returns what it removed."""
    if not dropin and written_by_sdoverlay(dropin_path(name)):
        dropin = dropin_path(name)
    removed = []
    try:
        if dropin:
            retire_dropin(dropin)
            removed.append(dropin)
        for path, wanted in ((paths.persistent_dir(name), persistent or bool(dropin)), (partial_dir(name), True)):
            if wanted and os.path.lexists(path):
                shutil.rmtree(path)
                removed.append(path)
    finally:
        if dropin:
            await systemd.reload()
    return removed


async def hotfix(systemd: Systemd, spec: OverlaySpec) -> OverlayStatus:
    """A persistent unlock: drop-in, reload, start; on failure nothing is left."""
    write_dropin(spec, ORIGIN_PREFIX + "unlock --hotfix`.")
    try:
        return await _activate(systemd, spec, "unlock")
    except BaseException as error:
        problems = await overlays.teardown(systemd, spec) + await forget(systemd, spec)
        if problems and isinstance(error, SdoverlayError):
            error.message += "; rollback incomplete: " + "; ".join(problems)
        raise


async def _complete(systemd: Systemd, name: str) -> OverlayStatus:
    """Bring up persistent overlay NAME from its drop-in (reload, start)."""
    await systemd.reload()
    status = await overlays.find(systemd, name)
    if status.state not in ("active", "degraded"):
        failure = await overlays.start_overlay(systemd, status.spec)
        if failure is not None:
            raise OperationFailed(f"cannot persist overlay {name!r}: {failure}")
        status = await overlays.find(systemd, name)
    return status


async def rebase(systemd: Systemd, spec: OverlaySpec) -> OverlayStatus:
    """Lay stale persistent overlay SPEC over this boot's image, knowingly:
    its drop-in records this image instead, its writes are kept."""
    if not written_by_sdoverlay(spec.dropin):
        raise Conflict(f"cannot rebase overlay {spec.name!r}: {spec.dropin} is not a drop-in sdoverlay wrote")
    lines = [line for line in ini.read_regular_file(spec.dropin).splitlines() if not line.startswith("Image=")]
    image = imageid.current()
    partial = spec.dropin + ".partial"
    with open(partial, "w", encoding="utf-8") as file:
        file.write("\n".join(lines + ([f"Image={image}"] if image else [])) + "\n")
        file.flush()
        os.fsync(file.fileno())
    os.rename(partial, spec.dropin)
    return await _activate(systemd, spec, "rebase")


async def persist(systemd: Systemd, name: str) -> OverlayStatus:
    """Turn live overlay NAME into a persistent one, keeping its content and its writes.

    Idempotent, and it finishes what a killed persist of NAME began (issue 7,
    item 4); the host-wide lock is held, so what it finds half-done was left
    by a dead command:
    - the transient overlay is still up: a drop-in of ours, its data and a
      partial copy are thrown away and the persist starts again;
    - the transient overlay is gone (or down), and the drop-in and data are
      whole: daemon-reload and start the persistent overlay;
    - the overlay is persistent already from /etc/sdoverlay.d/NAME.conf:
      it is started if it is not active.
    """
    dropin = dropin_path(name)
    ours = written_by_sdoverlay(dropin)
    data_whole = ours and os.path.isdir(paths.persistent_dir(name))
    try:
        status = await overlays.find(systemd, name)
    except NotFound:
        if data_whole:
            return await _complete(systemd, name)
        raise
    old = status.spec
    if old.persistent and old.dropin == dropin:
        return await _complete(systemd, name)
    if old.persistent or old.dropin:
        raise Conflict(f"overlay {name!r} comes from a drop-in already ({old.dropin})")
    if status.state == "detached":
        raise Conflict(f"overlay {name!r} is removed already; {status.problem}")
    if not _area_mounted(old):
        if data_whole:  # killed while the transient units went down
            problems = await overlays.teardown(systemd, old)
            if problems:
                raise OperationFailed(f"cannot persist overlay {name!r}: " + "; ".join(problems))
            await overlays.wait_until_unloaded(systemd, old.units + old.helper_units)
            return await _complete(systemd, name)
        raise OperationFailed(f"cannot persist overlay {name!r}: it is {status.state}; only a live overlay can be persisted")
    if ours:  # a killed persist's drop-in and data; the live overlay still has it all
        if os.path.lexists(paths.persistent_dir(name)):
            shutil.rmtree(paths.persistent_dir(name))
        os.unlink(dropin)
    new = old._replace(
        persistent=True,
        dropin=dropin,
        # The copies of the SOURCEs become its SOURCEs: one per layer.
        source=SOURCE_SEPARATOR.join(reversed(old.content_layers(f"{old.persistent_dir}/content"))) or None,
        keep_ownership=True,  # the content was made root's (or kept) at apply
    )
    if os.path.lexists(new.dropin):
        raise Conflict(f"{new.dropin} exists already")
    if os.path.lexists(new.persistent_dir):
        raise Conflict(f"{new.persistent_dir} exists already")
    await overlays.take_down(systemd, old, "persist")
    partial = partial_dir(name)
    try:
        if os.path.lexists(partial):
            shutil.rmtree(partial)
        os.makedirs(partial, 0o700)
        if old.source is not None:
            _copy_with_cp(old.content_dir, f"{partial}/content")
        if not old.read_only:
            _copy_with_cp(old.upper_dir, f"{partial}/upper")
        # The drop-in first, then the data in place: data under its final
        # name always has a drop-in of ours, so it is never taken for state
        # that someone else left.
        write_dropin(new, ORIGIN_PREFIX + f"persist {name}`.")
        os.rename(partial, new.persistent_dir)
    except (OSError, SdoverlayError) as error:
        shutil.rmtree(partial, ignore_errors=True)
        if written_by_sdoverlay(dropin):
            os.unlink(dropin)
        await overlays.bring_up(systemd, old, "persist")
        if isinstance(error, SdoverlayError):
            raise
        raise OperationFailed(f"cannot persist overlay {name!r}: {error.strerror}: {error.filename}") from error
    # The live transient units give way to the generated ones of the same names.
    problems = await overlays.teardown(systemd, old)
    if problems:
        raise OperationFailed(f"cannot persist overlay {name!r}: " + "; ".join(problems))
    await overlays.wait_until_unloaded(systemd, old.units + old.helper_units)
    try:
        return await _activate(systemd, new, "persist")
    except SdoverlayError as error:
        error.message += f"; its drop-in {new.dropin} and data in {new.persistent_dir} are kept"
        raise


def _copy_with_cp(source: str, destination: str) -> None:
    """cp -a of an overlay's content or upper dir: cp keeps what an upper dir
    means to overlayfs (whiteouts are 0:0 character devices, opaque dirs
    trusted.overlay.* xattrs), which sdoverlay.snapshot, made for SOURCEs
    that must carry no devices, does not make."""
    completed = subprocess.run(["cp", "-a", "-T", "--", source, destination],
                               capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        reason = completed.stderr.strip().splitlines()
        raise OperationFailed(f"cannot copy {source}: {reason[0] if reason else 'cp failed'}")


def _area_mounted(spec: OverlaySpec) -> bool:
    return mountinfo.is_mount_point(spec.area, mountinfo.read())
