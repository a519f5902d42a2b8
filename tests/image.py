"""A second real OS for the tests: Debian 13 (systemd 257, Python 3.13);
and Debian 12 images for the Debian package's install.

The base is built from the Debian archive with mmdebstrap and cached in
.cache/ (ignored by git; CI builds it when absent, about 20 s). Each test
gets a copy with sdoverlay installed in its /usr by `make install`, as an
image build would, and boots it with its own read-only /usr.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.testbed import PYTHON_SITE, REPO

SUITE = "trixie"
RUNTIME = ["systemd", "systemd-sysv", "dbus", "polkitd", "python3", "python3-click", "python3-dbus-next",
           "python3-systemd", "util-linux", "mount", "man-db", "bash-completion"]
PACKAGES = {
    "trixie": [*RUNTIME,
               # export --format=raw: systemd-repart, with erofs and dm-verity.
               "systemd-repart", "erofs-utils", "libcryptsetup12"],
    # Debian 12, for the package's install on it (tests/test_package.py).
    "bookworm": RUNTIME,
    # Debian 12 as an ostree deployment (tests/ostree.py).
    "bookworm-ostree": [*RUNTIME, "ostree"],
}
# The Debian suite of each entry of PACKAGES.
SUITES = {"bookworm-ostree": "bookworm"}


INSTALLED_PACKAGE = f"{PYTHON_SITE}/sdoverlay"


# Run by a system's own Python with a package dir as argument: prints each
# module that Python would compile on import (read-only /usr: on every run)
# because it has no checked-hash .pyc of its source's current contents.
UNCOMPILED_MODULES = """
import importlib.util, pathlib, sys
for source in sorted(pathlib.Path(sys.argv[1]).rglob("*.py")):
    cached = pathlib.Path(importlib.util.cache_from_source(str(source)))
    header = cached.read_bytes()[:16] if cached.exists() else b""
    if (header[:4] != importlib.util.MAGIC_NUMBER or int.from_bytes(header[4:8], "little") != 0b11
            or header[8:] != importlib.util.source_hash(source.read_bytes())):
        print(source)
"""


class ImageBuildFailed(RuntimeError):
    pass


def base(suite: str = SUITE) -> Path:
    """The cached base rootfs of SUITE, built first where it is missing or stale."""
    cache = REPO / ".cache" / f"debian-{suite}"
    root, stamp = cache / "root", cache / "packages"
    wanted = " ".join(PACKAGES[suite]) + "\n"
    if stamp.is_file() and stamp.read_text() == wanted and root.is_dir():
        return root
    if shutil.which("mmdebstrap") is None:
        raise ImageBuildFailed("mmdebstrap is missing: run scripts/setup first")
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    completed = subprocess.run(
        ["mmdebstrap", "--variant=minbase", f"--include={','.join(PACKAGES[suite])}", SUITES.get(suite, suite),
         str(root)],
        capture_output=True, text=True, check=False,
    )
    if completed.returncode != 0:
        shutil.rmtree(cache, ignore_errors=True)
        raise ImageBuildFailed(f"mmdebstrap {suite} failed: {completed.stderr[-2000:]}")
    stamp.write_text(wanted)
    return root


def image(directory: Path) -> Path:
    """A copy of the base with sdoverlay installed in its /usr, in DIRECTORY:
    `make install` from here, then the package byte-compiled by the image's
    own Python (3.13; this machine's 3.11 would write .pyc files it never
    reads), as an image build does in the image."""
    root = directory / "image"
    subprocess.run(["cp", "-a", "--reflink=auto", str(base()), str(root)], check=True)
    completed = subprocess.run(["make", "-s", "-C", str(REPO), "install", f"DESTDIR={root}", "PYTHON=/usr/bin/python3",
                                "BYTE_COMPILE=no"], capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise ImageBuildFailed(f"make install into the image failed: {completed.stderr[-2000:]}")
    completed = subprocess.run(["systemd-nspawn", "-D", str(root), "--register=no", "--keep-unit", "-q",
                                "python3", "-m", "compileall", "-q", "--invalidation-mode", "checked-hash",
                                INSTALLED_PACKAGE], capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise ImageBuildFailed(f"byte-compiling the package in the image failed: {completed.stdout[-1000:]}"
                               f"{completed.stderr[-1000:]}")
    return root


def packaged_image(directory: Path, deb: Path, files: dict[str, str], suite: str = SUITE) -> Path:
    """A copy of the base with the .deb installed as an image build would
    (dpkg in the image, its triggers run: the journal catalog, man-db) and
    FILES (path -> text; executable where the text starts with #!) added."""
    root = directory / "image"
    subprocess.run(["cp", "-a", "--reflink=auto", str(base(suite)), str(root)], check=True)
    shutil.copy(deb, root / "root" / deb.name)  # not /tmp: nspawn mounts a tmpfs there
    completed = subprocess.run(["systemd-nspawn", "-D", str(root), "--register=no", "--keep-unit", "-q",
                                "dpkg", "-i", f"/root/{deb.name}"], capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise ImageBuildFailed(f"dpkg -i {deb.name} in the image failed: {completed.stdout[-1000:]}"
                               f"{completed.stderr[-1000:]}")
    (root / "root" / deb.name).unlink()
    for path, text in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        if text.startswith("#!"):
            target.chmod(0o755)
    return root
