"""The Debian package (issue 11): built from a fresh clone with
dpkg-buildpackage, checked with lintian, installed into the Debian 13 image
with a vendor drop-in, and booted."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_test_bed
from tests.image import packaged_image
from tests.test_conventions import bash_completions
from tests.testbed import Container

VENDOR_DROPIN = "[Overlay]\nTarget=/usr/local/bin\nSource=/usr/lib/vendor-tools\n"
VENDOR_TOOL = "#!/bin/sh\necho vendor tool\n"


def test_the_package_builds_and_lintian_finds_no_error_or_warning(package: tuple[Path, str]) -> None:
    deb, report = package
    print(report)  # the report, for the closing note (pytest -s)
    assert [line for line in report.splitlines() if line[:2] in ("E:", "W:")] == []
    files = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    for path in ("./usr/bin/sdoverlay", "./usr/lib/systemd/system-generators/sdoverlay-generator",
                 "./usr/lib/systemd/system/sdoverlay.service", "./usr/share/dbus-1/system-services/org.sdoverlay.Overlays1.service",
                 "./usr/share/dbus-1/system.d/org.sdoverlay.Overlays1.conf", "./usr/share/polkit-1/actions/org.sdoverlay.policy",
                 "./usr/lib/systemd/catalog/sdoverlay.catalog", "./usr/share/man/man1/sdoverlay.1.gz",
                 "./usr/share/bash-completion/completions/sdoverlay", "./usr/share/doc/sdoverlay/examples/50-sdoverlay.rules",
                 "./usr/lib/python3/dist-packages/sdoverlay/cli.py"):
        assert f" {path}\n" in files, path
    depends = subprocess.run(["dpkg-deb", "-f", str(deb), "Depends"], capture_output=True, text=True, check=True).stdout
    assert {entry.split()[0] for entry in depends.strip().split(", ")} == {
        "dbus", "mount", "python3-click", "python3-dbus-next", "python3-systemd", "systemd", "util-linux", "python3:any"}


@pytest.mark.parametrize("suite, systemd", [("trixie", "257"), ("bookworm", "252")])
def test_an_image_with_the_package_and_a_vendor_dropin_boots_with_the_overlay(
        package: tuple[Path, str], tmp_path: Path, suite: str, systemd: str) -> None:
    """Debian 13 and Debian 12 images, the package installed with dpkg as an image build would."""
    require_test_bed()
    deb, _ = package
    root = packaged_image(tmp_path, deb, {"/usr/lib/sdoverlay.d/vendor-tools.conf": VENDOR_DROPIN,
                                          "/usr/lib/vendor-tools/vendor-hello": VENDOR_TOOL}, suite)
    # The booted container's /var is a fresh tmpfs (--volatile=yes): dpkg's database is read from the image.
    status = subprocess.run(["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", "-f=${Status} ${Version}",
                             "sdoverlay"], capture_output=True, text=True, check=True).stdout
    assert status == "install ok installed 0.1.0"
    # The journal catalog was updated on install (systemd's trigger), in the image's /var.
    catalog = subprocess.run(["journalctl", f"--root={root}", "--list-catalog"], capture_output=True, text=True,
                             check=True).stdout
    assert "3a8a135b4a5b4f5792bf7d6eaac70816 sdoverlay: sdoverlay: overlay @SDOVERLAY_NAME@ applied" in catalog
    with Container(root=str(root)) as bed:
        assert bed.run(["systemctl", "--version"]).stdout.startswith(f"systemd {systemd}")
        assert bed.run(["/usr/local/bin/vendor-hello"]).stdout == "vendor tool\n"
        listed = {entry["name"]: entry for entry in json.loads(bed.sdoverlay("list", "--json", check=True).stdout)}
        assert listed["vendor-tools"]["dropin"] == "/usr/lib/sdoverlay.d/vendor-tools.conf"
        assert listed["vendor-tools"]["state"] == "active"
        # Mounted before local-fs.target, by the boot burst.
        burst, local_fs = (int(bed.run(["systemctl", "show", "-P", "ActiveEnterTimestampMonotonic", unit]).stdout)
                           for unit in ("sdoverlay-boot.service", "local-fs.target"))
        assert 0 < burst <= local_fs
        # The volatile container has a fresh /etc, without man-db's /etc/manpath.config.
        manual = bed.run(["man", "-C", "/dev/null", "sdoverlay"],
                         env={"MANPATH": "/usr/share/man", "MANWIDTH": "80", "MANPAGER": "cat"}).stdout
        assert manual.startswith("SDOVERLAY(1)") and "EXIT STATUS" in manual and "sdoverlay run NAME" in manual
        found = bash_completions(bed, "/usr/share/bash-completion/completions/sdoverlay", "/usr/bin/sdoverlay")
        assert found["names"] == ["vendor-tools"]
