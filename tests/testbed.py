"""A throwaway systemd container: the real PID 1, D-Bus and polkit the tests drive.

The container shares the host's /usr read-only (a mount point, as on an
image-based OS) and gets fresh tmpfs /etc, /var and /run. The repository is
bound read-only at its own path, so the venv in it works inside too.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import itertools
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv"
SDOVERLAY = str(VENV / "bin" / "sdoverlay")
NOBODY = 65534
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}

_counter = itertools.count()


class BootFailed(RuntimeError):
    pass


# Where `make install` puts the package (the Makefile's PYTHON_SITE), and
# the test bed's /usr has it (host_root_with_service).
PYTHON_SITE = "/usr/lib/python3/dist-packages"


def installed_generator_script() -> str:
    """systemd/sdoverlay-generator.in as `make install` installs it: for the
    package in PYTHON_SITE."""
    return (REPO / "systemd" / "sdoverlay-generator.in").read_text().replace("@PYTHON_SITE@", PYTHON_SITE)


# sdoverlay's service files, where `make install` puts them under /usr.
_SERVICE_FILES = {
    "share/dbus-1/system-services/org.sdoverlay.Overlays1.service": "org.sdoverlay.Overlays1.service",
    "share/dbus-1/system.d/org.sdoverlay.Overlays1.conf": "org.sdoverlay.Overlays1.conf",
    "share/polkit-1/actions/org.sdoverlay.policy": "org.sdoverlay.policy",
}


def host_root_with_service() -> str:
    """A root dir for nspawn whose /usr is this host's with sdoverlay's
    service installed, as `make install` would (the service running the
    venv's Python): a tree of hard links to the host's /usr (5 s, no data
    copied; the container gets it read-only) plus those files, outside the
    repo. Made anew for each test run, removed when it ends.

    Not binds of the files' dirs over the host's /usr: those are mounts
    beneath /usr, which an overlay on /usr or /usr/share would hide (and
    sdoverlay refuses to hide). Not an overlayfs of the host's /usr: that
    adds a level of stacking (overlayfs allows two) and its own mounts."""
    base = Path("/var/tmp") / f"sdoverlay-testbed-{hashlib.sha256(str(REPO).encode()).hexdigest()[:12]}"
    shutil.rmtree(base, ignore_errors=True)
    usr = base / "root" / "usr"
    usr.parent.mkdir(parents=True)
    subprocess.run(["cp", "-al", "/usr", str(usr)], check=True)
    for path, name in _SERVICE_FILES.items():
        (usr / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "systemd" / name, usr / path)
    unit = usr / "lib/systemd/system/sdoverlay.service"
    unit.write_text((REPO / "systemd" / "sdoverlay.service.in").read_text().replace("@PYTHON@", str(VENV / "bin" / "python")))
    # The package as Debian's Python finds an installed one (and compiled,
    # as the read-only /usr cannot take .pyc files later): for what runs as
    # `/usr/bin/python3 -I` like the installed generator (benchmarks/).
    # The venv, which the tests use, finds the repository first.
    site = usr / PYTHON_SITE.removeprefix("/usr/") / "sdoverlay"
    shutil.copytree(REPO / "sdoverlay", site, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(["/usr/bin/python3", "-m", "compileall", "-q", str(site)], check=True)
    atexit.register(shutil.rmtree, base, ignore_errors=True)
    return str(base / "root")


def _cgroup_hierarchies() -> list[str]:
    """Where a container's systemd makes its cgroups: the unified hierarchy
    (cgroup v2), or on a hybrid host (this one: v1 controllers) its
    name=systemd and unified hierarchies."""
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        return ["/sys/fs/cgroup"]
    return [path for path in ("/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified") if os.path.isdir(path)]


@functools.cache
def _host_root() -> str:
    return host_root_with_service()


class Container:
    """ROOT "/" boots this machine's own OS (its /usr read-only, with
    sdoverlay's service added: host_root_with_service), sdoverlay from the
    venv; another ROOT is an OS image with sdoverlay installed in its /usr
    (tests/image.py), booted as it is."""

    def __init__(self, boot_timeout: float = 60.0, binds: tuple[str, ...] = (), root: str = "/",
                 init_args: tuple[str, ...] = (), own_cgroup: bool = False, volatile: bool = True,
                 read_only_binds: tuple[str, ...] = (), nspawn_env: dict[str, str] | None = None,
                 bind_repo: bool = True) -> None:
        self.machine = f"sdo-{os.getpid()}-{next(_counter)}"
        self.boot_timeout = boot_timeout
        self.binds = binds
        self.root = root
        self.init_args = init_args  # more of systemd's command line (systemd.mask=...)
        # VOLATILE: fresh /etc, /var and /run, the image's /usr read-only;
        # otherwise the tree as it is, as a deployment boots (tests/ostree.py).
        self.volatile = volatile
        self.read_only_binds = read_only_binds
        self.nspawn_env = nspawn_env or {}
        # BIND_REPO: the checkout at its own path (the venv works inside);
        # not where the root is immutable, as an ostree deployment's is.
        self.bind_repo = bind_repo
        # OWN_CGROUP: this container's nspawn starts in cgroups of its own,
        # so that it can run beside another (benchmarks that pair runs in two
        # containers); otherwise all share the host's and must run one at a
        # time (their units' cgroups collide: 219/CGROUP).
        self.cgroups = [f"{hierarchy}/{self.machine}" for hierarchy in _cgroup_hierarchies()] if own_cgroup else []
        self.sdoverlay_path = SDOVERLAY if root == "/" else "/usr/bin/sdoverlay"
        self._log = tempfile.TemporaryFile()
        self._nspawn: subprocess.Popen[bytes] | None = None
        self.pid = 0

    def __enter__(self) -> Container:
        command = [
            "systemd-nspawn", "-D", _host_root() if self.root == "/" else self.root,
            *(["--volatile=yes"] if self.volatile else []),
            "--register=no", "--keep-unit", "-M", self.machine, "-b", "--console=pipe", "-q",
            *([f"--bind-ro={REPO}"] if self.bind_repo else []),
            # nspawn drops CAP_SYSLOG; a host's sdoverlay.service has it, to
            # read overlayfs' reasons from the kernel log.
            "--capability=CAP_SYSLOG",
            *(f"--bind={bind}" for bind in self.binds),
            *(f"--bind-ro={bind}" for bind in self.read_only_binds),
            "systemd.mask=systemd-firstboot.service", *self.init_args,
        ]
        try:
            for cgroup in self.cgroups:
                os.mkdir(cgroup)
            self._nspawn = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                env={**os.environ, **self.nspawn_env} if self.nspawn_env else None,
                start_new_session=True, preexec_fn=self._join_cgroups if self.cgroups else None,
            )
            self._wait_for_boot()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _join_cgroups(self) -> None:
        # In the child, before nspawn starts: nspawn (--keep-unit, no systemd
        # on the host) makes the cgroup it runs in the container's root.
        for cgroup in self.cgroups:
            with open(f"{cgroup}/cgroup.procs", "w") as procs:
                procs.write(str(os.getpid()))

    def _wait_for_boot(self) -> None:
        assert self._nspawn is not None
        deadline = time.monotonic() + self.boot_timeout
        while not self.pid:
            if self._nspawn.poll() is not None or time.monotonic() > deadline:
                raise BootFailed(f"systemd-nspawn did not start a container: {self.log()}")
            self.pid = self._container_init()
            time.sleep(0.02)
        state = ""
        while time.monotonic() < deadline:
            remaining = max(1, int(deadline - time.monotonic()))
            completed = self.run(
                ["timeout", str(remaining), "systemctl", "is-system-running", "--wait"], check=False
            )
            state = completed.stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.1)
        raise BootFailed(f"container did not finish booting (state {state!r}): {self.log()}")

    def _container_init(self) -> int:
        """The container's PID 1: the child of nspawn that runs systemd.

        nspawn's first child is a short-lived helper that forks the real init
        (still named systemd-nspawn until it execs systemd): taking it would
        make every later nsenter fail."""
        assert self._nspawn is not None
        children = Path(f"/proc/{self._nspawn.pid}/task/{self._nspawn.pid}/children")
        try:
            pids = [int(pid) for pid in children.read_text().split()]
        except OSError:
            return 0
        for pid in pids:
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                    return pid
            except OSError:
                continue
        return 0

    def pid1_cpu_ms(self) -> float:
        """The CPU time the container's PID 1 has run for (/proc/PID/schedstat):
        what systemd itself spends (benchmarks)."""
        with open(f"/proc/{self.pid}/schedstat") as schedstat:
            return int(schedstat.read().split()[0]) / 1e6

    def log(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-4000:]

    def run(
        self,
        argv: list[str],
        *,
        user: int | None = None,
        login_groups: bool = False,
        check: bool = True,
        env: dict[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        prefix = ["nsenter", "-t", str(self.pid), "-a"]
        if user is not None:
            # LOGIN_GROUPS: the user's groups from /etc/group, as a login
            # gives them (polkit 126 asks the caller's process for them).
            groups = "--init-groups" if login_groups else "--clear-groups"
            prefix += ["setpriv", f"--reuid={user}", f"--regid={user}", groups]
        completed = subprocess.run(
            [*prefix, *argv], capture_output=True, text=True, env={**CLEAN_ENV, **(env or {})},
            input=input, check=False, timeout=300,
        )
        if check and completed.returncode != 0:
            raise AssertionError(
                f"{shlex.join(argv)} exited {completed.returncode}\n"
                f"stdout: {completed.stdout}\nstderr: {completed.stderr}"
            )
        return completed

    def sh(self, script: str, **kwargs) -> subprocess.CompletedProcess[str]:
        return self.run(["sh", "-ec", script], **kwargs)

    def sdoverlay(self, *args: str, **kwargs) -> subprocess.CompletedProcess[str]:
        kwargs.setdefault("check", False)
        return self.run([self.sdoverlay_path, *args], **kwargs)

    def __exit__(self, *_exc: object) -> None:
        if self._nspawn is not None:
            self._power_off(self._nspawn)
        self._remove_cgroups()  # also after a failed start: made before nspawn runs
        self._log.close()

    def _power_off(self, nspawn: subprocess.Popen[bytes]) -> None:
        if nspawn.poll() is None:
            nspawn.send_signal(signal.SIGTERM)  # powers the container off
            try:
                nspawn.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(nspawn.pid, signal.SIGKILL)
                nspawn.wait()
        # A container whose nspawn was killed must not live on: every
        # container shares this host's cgroup tree, and a leftover one breaks
        # the next one's units (219/CGROUP). Killing its PID 1 ends its PID
        # namespace.
        if self.pid and os.path.exists(f"/proc/{self.pid}"):
            os.kill(self.pid, signal.SIGKILL)
            for _ in range(100):
                if not os.path.exists(f"/proc/{self.pid}"):
                    break
                time.sleep(0.05)

    def _remove_cgroups(self) -> None:
        for cgroup in self.cgroups:  # and the ones its systemd made in it, deepest first
            for directory, _subdirs, _files in sorted(os.walk(cgroup), key=lambda entry: -entry[0].count("/")):
                try:
                    os.rmdir(directory)
                except OSError:
                    pass  # still in use: left for the host's owner to see
