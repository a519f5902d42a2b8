"""sdoverlay: named, transient overlays on a read-only /usr, managed as systemd units."""

__version__ = "0.1.0"
# What `sdoverlay --version` prints (click's format, kept by sdoverlay.entry).
VERSION_TEXT = f"sdoverlay, version {__version__}"
