"""Overlays that survive a reboot: drop-ins in /etc/sdoverlay.d, upper dirs in /var/lib/sdoverlay.

A persistent overlay is described by a drop-in; the generator
(sdoverlay.generator) turns it into units at boot and on daemon-reload, so
`persist` and `unlock --hotfix` write a drop-in, reload systemd and start
the generated units, and `remove` takes the drop-in away again.
"""

from __future__ import annotations

import dataclasses
import os
import shutil

from sdoverlay import content, overlays
from sdoverlay.bus import Systemd
from sdoverlay.errors import Conflict, OperationFailed, SdoverlayError
from sdoverlay.generator import DROPIN_DIRS, SECTION
from sdoverlay.overlays import OverlayStatus
from sdoverlay.spec import OverlaySpec

ADMIN_DIR = DROPIN_DIRS[0]  # /etc/sdoverlay.d: the administrator's
RUNTIME_DIR = DROPIN_DIRS[1]  # /run/sdoverlay.d


def dropin_path(name: str) -> str:
    return f"{ADMIN_DIR}/{name}.conf"


def dropin_text(spec: OverlaySpec, origin: str) -> str:
    def yes_no(value: bool) -> str:
        return "yes" if value else "no"

    lines = [f"# {origin}", f"[{SECTION}]", f"Name={spec.name}", f"Target={spec.target}"]
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
    """After its units are stopped: drop a persistent overlay's drop-in and data, reload."""
    problems = []
    try:
        if spec.dropin:
            retire_dropin(spec.dropin)
        if spec.persistent and os.path.lexists(spec.persistent_dir):
            shutil.rmtree(spec.persistent_dir)
    except OSError as error:
        problems.append(f"{error.strerror}: {error.filename}")
    if spec.dropin:
        await systemd.reload()
    return problems


async def hotfix(systemd: Systemd, spec: OverlaySpec) -> OverlayStatus:
    """A persistent unlock: drop-in, reload, start; on failure nothing is left."""
    write_dropin(spec, "Written by `sdoverlay unlock --hotfix`.")
    try:
        return await _activate(systemd, spec, "unlock")
    except BaseException as error:
        problems = await overlays.teardown(systemd, spec) + await forget(systemd, spec)
        if problems and isinstance(error, SdoverlayError):
            error.message += "; rollback incomplete: " + "; ".join(problems)
        raise


async def persist(systemd: Systemd, name: str, caller_uid: int, force: bool) -> OverlayStatus:
    """Turn live overlay NAME into a persistent one, keeping its content and its writes."""
    status = await overlays.find(systemd, name)
    overlays.check_owner(status, caller_uid, force, "persist")
    old = status.spec
    if old.persistent or old.dropin:
        raise Conflict(f"overlay {name!r} is persistent already ({old.dropin})")
    new = dataclasses.replace(
        old,
        persistent=True,
        dropin=dropin_path(name),
        source=f"{old.persistent_dir}/content" if old.source is not None else None,
        keep_ownership=True,  # the content was made root's (or kept) at apply
    )
    if os.path.lexists(new.dropin):
        raise Conflict(f"{new.dropin} exists already")
    if os.path.lexists(new.persistent_dir):
        raise Conflict(f"{new.persistent_dir} exists already")
    await overlays.take_down(systemd, old, "persist")
    try:
        os.makedirs(new.persistent_dir, 0o700)
        if old.source is not None:
            content.copy_in(old.content_dir, new.source)  # type: ignore[arg-type]
        if not old.read_only:
            content.copy_in(old.upper_dir, new.upper_dir)
        write_dropin(new, f"Written by `sdoverlay persist {name}`.")
    except (OSError, SdoverlayError) as error:
        shutil.rmtree(new.persistent_dir, ignore_errors=True)
        await overlays.bring_up(systemd, old, "persist")
        if isinstance(error, SdoverlayError):
            raise
        raise OperationFailed(f"cannot persist overlay {name!r}: {error.strerror}: {error.filename}") from error
    # The live transient units give way to the generated ones of the same names.
    problems = await overlays.teardown(systemd, old)
    if problems:
        raise OperationFailed(f"cannot persist overlay {name!r}: " + "; ".join(problems))
    await overlays.wait_until_unloaded(systemd, old.units + [old.hold_unit])
    try:
        return await _activate(systemd, new, "persist")
    except SdoverlayError as error:
        error.message += f"; its drop-in {new.dropin} and data in {new.persistent_dir} are kept"
        raise
