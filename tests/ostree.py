"""A real ostree deployment as a test bed: Debian 12 (systemd 252) with
sdoverlay's .deb installed into the tree before the commit, as an image
build would, laid out the ostree way, committed, deployed with `ostree
admin deploy`, and booted as ostree-prepare-root leaves a host: the
deployment as the root, its /usr read-only, the sysroot at /sysroot, the
stateroot's /var, /run/ostree-booted. Its /etc and /var persist across
boots (no --volatile), as on a real host.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.image import packaged_image
from tests.testbed import Container

OS_NAME = "debian"
BRANCH = "debian/x86_64"
KERNEL = "6.1.0-placeholder"
# What ostree wants of a tree (man:ostree-prepare-root(1), ostree's
# "Deployments" docs): /etc as /usr/etc (the default config, merged into
# each deployment's /etc), state in /var, these as links into it (and
# /ostree into the sysroot, where `ostree admin` finds the repo).
LINKS_INTO_VAR = {"home": "var/home", "root": "var/roothome", "srv": "var/srv", "opt": "var/opt",
                  "mnt": "var/mnt", "media": "run/media", "ostree": "sysroot/ostree"}
EMPTY = ("var", "dev", "proc", "sys", "run", "tmp", "boot", "sysroot")


class OstreeFailed(RuntimeError):
    pass


def _run(argv: list[str], what: str) -> str:
    completed = subprocess.run(argv, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise OstreeFailed(f"{what} failed: {completed.stdout[-1000:]}{completed.stderr[-1000:]}")
    return completed.stdout


def tree(directory: Path, deb: Path, files: dict[str, str]) -> Path:
    """The rootfs with the package and FILES installed, in the ostree layout."""
    directory.mkdir(parents=True, exist_ok=True)
    root = packaged_image(directory, deb, files, "bookworm-ostree")
    os.rename(root / "etc", root / "usr" / "etc")
    for name in EMPTY:
        shutil.rmtree(root / name, ignore_errors=True)
        (root / name).mkdir()
    for name, target in LINKS_INTO_VAR.items():
        shutil.rmtree(root / name, ignore_errors=True)
        if (root / name).is_symlink():
            (root / name).unlink()
        (root / name).symlink_to(target)
    modules = root / "usr" / "lib" / "modules" / KERNEL
    modules.mkdir(parents=True, exist_ok=True)
    (modules / "vmlinuz").write_bytes(b"placeholder kernel\n")  # ostree admin deploy insists on one
    (modules / "initramfs.img").write_bytes(b"placeholder initramfs\n")
    return root


class Sysroot:
    """An ostree sysroot with the OS 'debian' and its commits and deployments."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.repo = directory / "repo"
        self.path = directory / "sysroot"
        _run(["ostree", f"--repo={self.repo}", "init", "--mode=bare"], "ostree init")
        self.path.mkdir()
        _run(["ostree", "admin", "init-fs", str(self.path)], "ostree admin init-fs")
        _run(["ostree", "admin", "os-init", OS_NAME, f"--sysroot={self.path}"], "ostree admin os-init")

    def commit(self, tree_dir: Path, subject: str) -> str:
        """Commit TREE_DIR to the branch, pull it into the sysroot; its checksum."""
        checksum = _run(["ostree", f"--repo={self.repo}", "commit", "-b", BRANCH, f"--subject={subject}",
                         f"--tree=dir={tree_dir}"], "ostree commit").strip()
        _run(["ostree", f"--repo={self.path}/ostree/repo", "pull-local", str(self.repo), BRANCH], "ostree pull-local")
        return checksum

    def deploy(self) -> Path:
        """Deploy the branch's newest commit; its deployment dir (the new default)."""
        before = set(self.deployments())
        _run(["ostree", "admin", "deploy", f"--sysroot={self.path}", f"--os={OS_NAME}", BRANCH], "ostree admin deploy")
        (new,) = set(self.deployments()) - before
        return new

    def deployments(self) -> list[Path]:
        root = self.path / "ostree" / "deploy" / OS_NAME / "deploy"
        if not root.is_dir():
            return []
        return sorted(path for path in root.iterdir() if path.is_dir() and not path.name.endswith(".origin"))

    @property
    def var(self) -> Path:
        return self.path / "ostree" / "deploy" / OS_NAME / "var"

    def boot(self, deployment: Path) -> Container:
        """DEPLOYMENT booted as ostree-prepare-root lays it out."""
        # prepare-root leaves /run/ostree-booted before systemd starts (its
        # generators look at it); nspawn's /run is a fresh tmpfs, so the file
        # is bound in.
        booted = self.directory / "ostree-booted"
        booted.touch()
        # The deployment lies inside a bind: nspawn's lock would call it busy.
        return Container(root=str(deployment), volatile=False,
                         binds=(f"{self.path}:/sysroot", f"{self.var}:/var", f"{self.path}/boot:/boot"),
                         read_only_binds=(f"{deployment}/usr:/usr", f"{booted}:/run/ostree-booted"),
                         nspawn_env={"SYSTEMD_NSPAWN_LOCK": "0"}, bind_repo=False)
