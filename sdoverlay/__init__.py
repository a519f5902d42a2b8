"""sdoverlay: named, transient overlays on a read-only /usr, managed as systemd units."""

__version__ = "0.1.0"
