from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.image import image
from tests.testbed import REPO, SDOVERLAY, Container

# Debian's own tools, not a Python of the developer's first on PATH.
DEBIAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def require_test_bed() -> None:
    # Never skip: a test bed that cannot boot fails the run and says why.
    missing = [tool for tool in ("systemd-nspawn", "nsenter", "setpriv") if shutil.which(tool) is None]
    if os.geteuid() != 0:
        pytest.fail("the integration tests boot systemd containers and must run as root")
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run scripts/setup first (apt-get install systemd-container)")
    if not os.access(SDOVERLAY, os.X_OK):
        pytest.fail(f"{SDOVERLAY} is missing: run scripts/setup first")


@pytest.fixture
def bed() -> Iterator[Container]:
    require_test_bed()
    with Container() as container:
        yield container


@pytest.fixture(params=["systemd-252", "systemd-257"])
def each_bed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Container]:
    """Both test beds in turn: this machine's Debian 12 (systemd 252)
    and the Debian 13 image with sdoverlay installed in it (systemd 257),
    whose systemd, polkit and journal answer in their own words."""
    require_test_bed()
    root = "/" if request.param == "systemd-252" else str(image(tmp_path))
    with Container(root=root) as container:
        version = container.run(["systemctl", "--version"]).stdout.split()[1]
        assert version == request.param.split("-")[1], version
        yield container


@pytest.fixture(scope="session")
def package(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """The .deb built from a fresh clone of the committed tree, and lintian's report."""
    work = tmp_path_factory.mktemp("package")
    subprocess.run(["git", "clone", "-q", str(REPO), str(work / "sdoverlay")], check=True)
    build = subprocess.run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=work / "sdoverlay", capture_output=True,
                           text=True, check=False, env={"PATH": DEBIAN_PATH, "LC_ALL": "C.UTF-8"})
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    debs = list(work.glob("sdoverlay_*_all.deb"))
    changes = list(work.glob("sdoverlay_*.changes"))
    assert len(debs) == 1 and len(changes) == 1, list(work.iterdir())
    lintian = subprocess.run(["lintian", "--pedantic", "--info", str(changes[0])], capture_output=True, text=True,
                             check=False, env={"PATH": DEBIAN_PATH, "LC_ALL": "C.UTF-8"})
    yield debs[0], lintian.stdout + lintian.stderr
