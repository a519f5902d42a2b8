"""sdoverlay.conf: where overlays may go and how much each owner may have.

Read as systemd reads its own configuration: /etc/sdoverlay/sdoverlay.conf
(or the first of the same file in /run, /usr/local/lib, /usr/lib), then the
drop-ins sdoverlay.conf.d/*.conf from all four, sorted by file name, the
first dir winning for a name. Later assignments override earlier ones; for
the list AllowedRoots= an empty assignment resets it.

    [Overlays]
    AllowedRoots=/usr
    UserAllowedRoots=/usr/share/doc   # for callers other than root; default: DEFAULT_USER_ALLOWED_ROOTS
    MaxOverlaysPerOwner=infinity
    MaxBytesPerOwner=infinity
"""

from __future__ import annotations

import os

from sdoverlay import ini, paths, sizes
from sdoverlay.record import record
from sdoverlay.errors import InvalidInput

CONFIG_DIRS = ["/etc/sdoverlay", "/run/sdoverlay", "/usr/local/lib/sdoverlay", "/usr/lib/sdoverlay"]
SECTION = "Overlays"


DEFAULT_ALLOWED_ROOTS = ("/usr",)
# Where callers other than root may put overlays unless configured: trees
# that people read and no privileged process runs or trusts. Nearly every
# other part of /usr makes whoever may overlay it root: programs and
# libraries (/usr/bin, /usr/lib), but also what decides who may do what
# (/usr/share/polkit-1/rules.d, /usr/share/dbus-1, PAM's modules in
# /usr/lib/*/security), what systemd starts (/usr/lib/systemd) and every
# interpreter's modules (/usr/lib/python3). man-db's indexer reads the man
# pages as user man, never as root.
DEFAULT_USER_ALLOWED_ROOTS = ("/usr/share/doc", "/usr/share/info", "/usr/share/man")


@record  # not a dataclass: see sdoverlay.record
class Config:
    allowed_roots: tuple[str, ...] = DEFAULT_ALLOWED_ROOTS
    max_overlays_per_owner: int | None = None  # None: no limit
    max_bytes_per_owner: int | None = None
    # Where callers other than root may put overlays. Each must lie within
    # AllowedRoots= (narrower, never wider).
    user_allowed_roots: tuple[str, ...] = DEFAULT_USER_ALLOWED_ROOTS

    def roots_for(self, caller_uid: int) -> tuple[str, ...]:
        if caller_uid == 0:
            return self.allowed_roots
        return tuple(root for root in self.user_allowed_roots
                     if any(paths.is_within(root, allowed) for allowed in self.allowed_roots))


def config_files() -> list[str]:
    main = next(
        (f"{d}/sdoverlay.conf" for d in CONFIG_DIRS if os.path.isfile(f"{d}/sdoverlay.conf")), None
    )
    dropins = ini.layered_files([f"{d}/sdoverlay.conf.d" for d in CONFIG_DIRS], ".conf")
    return ([main] if main and not ini.is_masked(main) else []) + dropins


def _count_limit(value: str, where: str) -> int | None:
    if value in ("", "infinity"):
        return None
    if not value.isdigit():
        raise InvalidInput(f"invalid configuration {where}: {value!r} is not a number or 'infinity'")
    return int(value)


def _bytes_limit(value: str, where: str) -> int | None:
    if value in ("", "infinity"):
        return None
    try:
        return sizes.parse_bytes(value)
    except ValueError:
        raise InvalidInput(f"invalid configuration {where}: {value!r} is not a size or 'infinity'") from None


def load() -> Config:
    roots: list[str] | None = None  # None: the default; the first assignment replaces it
    user_roots: list[str] | None = None
    max_overlays: int | None = None
    max_bytes: int | None = None
    for path in config_files():
        try:
            entries = ini.parse(ini.read_regular_file(path))
        except (OSError, ValueError) as error:
            raise InvalidInput(f"invalid configuration {path}: {error}") from error
        for section, key, value in entries:
            where = f"{path}: {key}="
            if section != SECTION:
                raise InvalidInput(f"invalid configuration {path}: unknown section [{section}]")
            if key in ("AllowedRoots", "UserAllowedRoots"):
                listed = roots if key == "AllowedRoots" else user_roots
                if listed is None or not value:
                    listed = []
                for root in value.split():
                    if not root.startswith("/") or paths.check_path_chars(root) or ".." in root.split("/"):
                        raise InvalidInput(f"invalid configuration {where}: {root!r} is not a plain absolute path")
                    listed.append(os.path.normpath(root))
                if key == "AllowedRoots":
                    roots = listed
                else:
                    user_roots = listed
            elif key == "MaxOverlaysPerOwner":
                max_overlays = _count_limit(value, where)
            elif key == "MaxBytesPerOwner":
                max_bytes = _bytes_limit(value, where)
            else:
                raise InvalidInput(f"invalid configuration {path}: unknown key {key}=")
    return Config(tuple(roots) if roots is not None else DEFAULT_ALLOWED_ROOTS, max_overlays, max_bytes,
                  tuple(user_roots) if user_roots is not None else DEFAULT_USER_ALLOWED_ROOTS)
