"""What one overlay is, and how its metadata is stored in its units.

The CLI keeps no database: everything `list` shows is read back from the
area unit (the overlay's tmpfs), whose LogExtraFields= carry the metadata as
one SDOVERLAY_METADATA= field of `x-sdoverlay.KEY=VALUE` entries. systemd
keeps it in the unit (in its transient unit file, or the generator's) and it
survives `daemon-reload` and `daemon-reexec`; it also marks every journal
record of the area's mount and unmount as the overlay's.

Not in the area's mount options (Options=), where it was first: mount(8)
keeps x-* options in libmount's /run/mount/utab, which systemd (252:
mount_load_proc_self_mountinfo, through mnt_table_parse_mtab) and every
mount(8) then read and merge into the mount table on every mount change. With
300 overlays present that made each new overlay 1.45x as slow as with none,
against 1.15x with the same mounts and no utab, and systemd's own
`systemd-mount` 1.68x instead of 1.46x (issue 9, benchmarks/README.md).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself is not imported: see sdoverlay.record

from sdoverlay import paths
from sdoverlay.record import record

if TYPE_CHECKING:
    from typing import Literal

    OverlayKind = Literal["mount", "service"]

METADATA_PREFIX = "x-sdoverlay."
# The area unit's LogExtraFields= entry that holds the metadata.
METADATA_FIELD = "SDOVERLAY_METADATA"
SOURCE_SEPARATOR = paths.SOURCE_SEPARATOR
# The generated oneshot that mounts drop-in overlays at boot (sdoverlay.burst).
BURST_UNIT = "sdoverlay-boot.service"
# The template of the content units of drop-ins' overlays (sdoverlay.units),
# and what the name of one of its instances begins with.
CONTENT_TEMPLATE_UNIT = "usroverlay-content@.service"
CONTENT_TEMPLATE_PREFIX = CONTENT_TEMPLATE_UNIT.removesuffix(".service")
# Kept as they are in a metadata value; everything else is %XX-escaped (',' and
# '=' separate mount options). urllib.parse.quote's rules, without importing
# urllib (the generator's start-up time counts, issue 9).
_METADATA_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~/:@+")


def quote_metadata(value: str) -> str:
    if _METADATA_SAFE.issuperset(value):
        return value
    return "".join(chr(byte) if chr(byte) in _METADATA_SAFE else f"%{byte:02X}" for byte in value.encode())


@record  # not a dataclass: see sdoverlay.record
class OverlaySpec:
    """Everything needed to create, find and tear down one overlay."""

    name: str
    target: str
    # None: an empty writable overlay (unlock). Several SOURCEs, layered, are
    # joined by SOURCE_SEPARATOR, the last on top (`sources`).
    source: str | None
    read_only: bool
    size: str
    owner_uid: int
    created_at: str  # ISO 8601, UTC
    # A .mount unit for TARGET is only possible where TARGET is not a mount
    # point already: systemd owns that unit name (UnitExists). There a
    # oneshot service mounts and unmounts instead.
    kind: OverlayKind
    # umount(8) must not run from the overlay it removes, or it holds it busy.
    lazy_unmount: bool
    session: str = ""  # the owner's logind session at apply time, if any
    # How SOURCE was copied in (issue: safe by construction).
    keep_ownership: bool = False
    allow_setuid: bool = False
    allow_world_writable: bool = False
    # Persistent: the upper dir lives under /var/lib/sdoverlay/NAME and
    # survives reboots; the overlay comes back at boot from its drop-in.
    persistent: bool = False
    dropin: str = ""  # the drop-in file a generated overlay comes from
    # Private: writable only for `sdoverlay run NAME -- COMMAND`; mounted
    # read-only for every other process (sdoverlay.private).
    private: bool = False
    # Whose rights SOURCE is read and copied with: the process that asked,
    # which is root under sudo even though SUDO_UID names the owner. None:
    # the owner's (the overlay came from a drop-in, or from a package that
    # did not record it).
    reader_uid: int | None = None

    @property
    def copied_as_uid(self) -> int:
        return self.owner_uid if self.reader_uid is None else self.reader_uid

    @property
    def in_burst(self) -> bool:
        """Mounted at boot by BURST_UNIT: a drop-in's overlay of the mount kind."""
        return bool(self.dropin) and self.kind == "mount"

    @property
    def area(self) -> str:
        return paths.area_dir(self.name)

    @property
    def persistent_dir(self) -> str:
        return paths.persistent_dir(self.name)

    @property
    def content_dir(self) -> str:
        return f"{self.area}/content"

    @property
    def sources(self) -> list[str]:
        """The SOURCEs in the order given: each one's content lies over the one before."""
        return self.source.split(SOURCE_SEPARATOR) if self.source else []

    def content_layers(self, content_dir: str | None = None) -> list[str]:
        """Where the copies of the SOURCEs are, top first: the content dir
        itself for one SOURCE, its subdirs 0, 1, ... (one per SOURCE, in the
        order given) for several. CONTENT_DIR: the content dir elsewhere
        (the boot burst fills an area before it is attached)."""
        content_dir = content_dir or self.content_dir
        count = len(self.sources)
        if count <= 1:
            return [content_dir] if count else []
        return [f"{content_dir}/{index}" for index in reversed(range(count))]

    @property
    def writable_dir(self) -> str:
        """Where the upper and work dirs live: the area, or persistent storage."""
        return self.persistent_dir if self.persistent else self.area

    @property
    def upper_dir(self) -> str:
        return f"{self.writable_dir}/upper"

    @property
    def work_dir(self) -> str:
        return f"{self.writable_dir}/work"

    @property
    def area_unit(self) -> str:
        return paths.mount_unit_name(self.area)

    @property
    def overlay_unit(self) -> str:
        if self.kind == "mount":
            return paths.mount_unit_name(self.target)
        return f"usroverlay-{self.name}.service"

    @property
    def content_unit(self) -> str:
        # A drop-in's overlay has an instance of the generator's one template
        # (its settings in the instance's drop-in): a first boot costs ~1 ms
        # per generated unit file (sdoverlay.units.generated_files). Not for
        # the others: systemd cannot make an instance of a template it has a
        # file for into a transient unit.
        if self.dropin:
            return f"{CONTENT_TEMPLATE_PREFIX}{self.name}.service"
        return f"usroverlay-{self.name}-content.service"

    @property
    def hold_unit(self) -> str:
        return f"usroverlay-{self.name}-hold.service"

    @property
    def detached_unit(self) -> str:
        return detached_unit_name(self.name)

    @property
    def helper_units(self) -> list[str]:
        """The units sdoverlay starts beside the three, for a while."""
        return [self.hold_unit, self.detached_unit]

    @property
    def units(self) -> list[str]:
        return [self.area_unit, self.content_unit, self.overlay_unit]

    @property
    def layer_roots(self) -> tuple[str, ...]:
        """Every path overlay_options names lies within one of these: the
        target (the lowest layer), the area (content, upper and work dirs)
        or the persistent dir (a persistent overlay's upper and work dirs)."""
        return self.target, self.area, self.persistent_dir

    @property
    def overlay_options(self) -> str:
        lower = [*self.content_layers(), self.target]
        options = ["lowerdir=" + ":".join(lower)]
        if not self.read_only:
            options += [f"upperdir={self.upper_dir}", f"workdir={self.work_dir}"]
        # index=off: the index ties an upper dir to the exact lower file
        # handles; with index=on, remounting after the lower changed fails.
        # metacopy=off: a metacopy upper may point at arbitrary lower data
        # (Documentation/filesystems/overlayfs.rst, "Metadata only copy up"
        # warns against it for untrusted uppers). Both are set explicitly so
        # kernel build defaults (CONFIG_OVERLAY_FS_INDEX/METACOPY) do not
        # change behaviour between machines.
        # redirect_dir=off: a renamed dir is copied and its old name whited
        # out, so the upper dir says what changed without following redirect
        # xattrs (sdoverlay.changes); the kernel default is a build option
        # (CONFIG_OVERLAY_FS_REDIRECT_DIR).
        options += ["index=off", "metacopy=off", "redirect_dir=off"]
        return ",".join(options)

    def metadata(self) -> dict[str, str]:
        return {
            "name": self.name,
            "target": self.target,
            "source": self.source if self.source is not None else "",
            "owner-uid": str(self.owner_uid),
            "created": self.created_at,
            "read-only": _yes_no(self.read_only),
            "kind": self.kind,
            "lazy-unmount": _yes_no(self.lazy_unmount),
            "size": self.size,
            "session": self.session,
            "keep-ownership": _yes_no(self.keep_ownership),
            "allow-setuid": _yes_no(self.allow_setuid),
            "allow-world-writable": _yes_no(self.allow_world_writable),
            "persistent": _yes_no(self.persistent),
            "dropin": self.dropin,
            "private": _yes_no(self.private),
            "reader-uid": "" if self.reader_uid is None else str(self.reader_uid),
        }

    @property
    def metadata_options(self) -> str:
        """The metadata as x-sdoverlay.KEY=VALUE mount options, values percent-encoded."""
        return ",".join(
            f"{METADATA_PREFIX}{key}={quote_metadata(value)}" for key, value in self.metadata().items()
        )

    @property
    def area_options(self) -> str:
        # mode=0700: the work dir and upper dir are not for other users to
        # browse; overlayfs reaches them with the mounter's credentials.
        return f"mode=0700,size={self.size}"


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


def detached_unit_name(name: str) -> str:
    """The unit that keeps overlay NAME's area while the overlay, removed
    and detached lazily, is still in use (sdoverlay.units)."""
    return f"usroverlay-{name}-detached.service"


def run_unit_prefix(name: str) -> str:
    """What the transient units of `sdoverlay run NAME` are called, up to
    the pid of the caller's process: sdoverlay-run-NAME-PID.service."""
    return f"sdoverlay-run-{name}-"


def metadata_in_log_fields(fields: list[str]) -> str | None:
    """The metadata among an area unit's LogExtraFields= entries; None if
    there is none (a tmpfs unit that is not sdoverlay's)."""
    prefix = METADATA_FIELD + "="
    found = [field[len(prefix):] for field in fields if field.startswith(prefix)]
    return found[-1] if found else None


def parse_metadata(options: str) -> dict[str, str]:
    """The x-sdoverlay.* entries of a metadata string (comma-separated)."""
    found = {}
    for entry in options.split(","):
        key, separator, value = entry.partition("=")
        if separator and key.startswith(METADATA_PREFIX):
            # Most values have no '%': not calling percent_decode for them
            # took 13% off parsing (list reads 500 overlays' metadata, issue 9).
            found[key[len(METADATA_PREFIX):]] = paths.percent_decode(value) if "%" in value else value
    return found


def spec_from_argument(argv: list[str], program: str) -> OverlaySpec | None:
    """The overlay a helper's one METADATA argument describes (its x-sdoverlay.*
    options, as units pass them); None, and the usage said on stderr, if not."""
    spec = spec_from_metadata(parse_metadata(argv[0])) if len(argv) == 1 else None
    if spec is None:
        import sys

        print(f"usage: python3 -m {program} x-sdoverlay.name=...,x-sdoverlay.target=...", file=sys.stderr)
    return spec


def spec_from_metadata(found: dict[str, str]) -> OverlaySpec | None:
    """Rebuild a spec from stored metadata; None if it is not ours or incomplete."""
    try:
        return OverlaySpec(
            name=found["name"],
            target=found["target"],
            source=found["source"] or None,
            read_only=found["read-only"] == "yes",
            size=found["size"],
            owner_uid=int(found["owner-uid"]),
            created_at=found["created"],
            kind="service" if found["kind"] == "service" else "mount",
            lazy_unmount=found["lazy-unmount"] == "yes",
            session=found.get("session", ""),
            keep_ownership=found.get("keep-ownership") == "yes",
            allow_setuid=found.get("allow-setuid") == "yes",
            allow_world_writable=found.get("allow-world-writable") == "yes",
            persistent=found.get("persistent") == "yes",
            dropin=found.get("dropin", ""),
            private=found.get("private") == "yes",
            reader_uid=int(found["reader-uid"]) if found.get("reader-uid") else None,
        )
    except (KeyError, ValueError):
        return None
