from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.testbed import SDOVERLAY, Container


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
