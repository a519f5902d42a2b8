"""A throwaway systemd container: the real PID 1, D-Bus and polkit the tests drive.

The container shares the host's /usr read-only (a mount point, as on an
image-based OS) and gets fresh tmpfs /etc, /var and /run. The repository is
bound read-only at its own path, so the venv in it works inside too.
"""

from __future__ import annotations

import itertools
import os
import shlex
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


class Container:
    def __init__(self, boot_timeout: float = 60.0, binds: tuple[str, ...] = ()) -> None:
        self.machine = f"sdo-{os.getpid()}-{next(_counter)}"
        self.boot_timeout = boot_timeout
        self.binds = binds
        self._log = tempfile.TemporaryFile()
        self._nspawn: subprocess.Popen[bytes] | None = None
        self.pid = 0

    def __enter__(self) -> Container:
        command = [
            "systemd-nspawn", "-D", "/", "--volatile=yes", "--register=no", "--keep-unit",
            "-M", self.machine, "-b", "--console=pipe", "-q", f"--bind-ro={REPO}",
            *(f"--bind={bind}" for bind in self.binds),
            "systemd.mask=systemd-firstboot.service",
        ]
        self._nspawn = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self._wait_for_boot()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

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

    def log(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-4000:]

    def run(
        self,
        argv: list[str],
        *,
        user: int | None = None,
        check: bool = True,
        env: dict[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        prefix = ["nsenter", "-t", str(self.pid), "-a"]
        if user is not None:
            prefix += ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"]
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
        return self.run([SDOVERLAY, *args], **kwargs)

    def __exit__(self, *_exc: object) -> None:
        if self._nspawn is None:
            return
        if self._nspawn.poll() is None:
            self._nspawn.send_signal(signal.SIGTERM)  # powers the container off
            try:
                self._nspawn.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self._nspawn.pid, signal.SIGKILL)
                self._nspawn.wait()
        self._log.close()
