"""systemd-sysext beside sdoverlay, on systemd 252 and 257: what a merge and
an unmerge do to the overlays already there, and to those made after."""

from __future__ import annotations

import json

import pytest

from tests.test_overlays import listed
from tests.test_robust import nothing_left
from tests.testbed import Container

EXTENSION = "/var/lib/extensions/ext"
SYSEXT_COVER = "hidden by systemd-sysext's overlay on /usr, mounted after it"


@pytest.fixture
def bed(each_bed: Container) -> Container:
    return each_bed


def systemd_version(bed: Container) -> int:
    return int(bed.run(["systemctl", "--version"]).stdout.split()[1])


def make_extension(bed: Container) -> None:
    """A directory extension: one of sdoverlay's own exports."""
    bed.sdoverlay("unlock", "/usr/share/man", "--name", "ext", check=True)
    bed.sh("echo fromext > /usr/share/man/fromext.txt")
    bed.sdoverlay("export", "ext", EXTENSION, check=True)
    bed.sdoverlay("remove", "ext", check=True)


def state(bed: Container, name: str) -> tuple[str, str | None]:
    entry = listed(bed)[name]
    return entry["state"], entry["problem"]


def test_an_overlay_below_usr_across_a_merge(bed: Container) -> None:
    make_extension(bed)
    bed.sh("mkdir -p /srv/src && echo applied > /srv/src/applied.txt")
    bed.sdoverlay("apply", "doc", "/srv/src", "/usr/share/doc", check=True)
    bed.run(["systemd-sysext", "merge"])
    assert bed.run(["cat", "/usr/share/man/fromext.txt"]).stdout == "fromext\n"
    if systemd_version(bed) < 256:
        # 252 leaves the overlay under its own: unseen, yet mounted.
        assert bed.run(["test", "-e", "/usr/share/doc/applied.txt"], check=False).returncode == 1
        found, problem = state(bed, "doc")
        assert found == "hidden" and problem.startswith(SYSEXT_COVER), problem
        assert "systemd-sysext unmerge" in bed.sdoverlay("status", "doc", check=True).stdout
        for verb in ("remove", "reset"):
            result = bed.sdoverlay(verb, "doc")
            assert result.returncode == 4 and result.stderr.count("\n") == 1, result.stderr
            assert f"overlay 'doc' is {SYSEXT_COVER}" in result.stderr and "once it is visible again" in result.stderr
        assert state(bed, "doc")[0] == "hidden"
    else:
        # 256 and later move it on top of the merged /usr: still seen, still writable.
        assert bed.run(["cat", "/usr/share/doc/applied.txt"]).stdout == "applied\n"
        bed.sh("echo during > /usr/share/doc/during.txt")
        assert state(bed, "doc") == ("active", None)
    bed.run(["systemd-sysext", "unmerge"])
    assert state(bed, "doc") == ("active", None)
    assert bed.run(["cat", "/usr/share/doc/applied.txt"]).stdout == "applied\n"
    bed.sdoverlay("remove", "doc", check=True)
    nothing_left(bed)


def test_an_unlocked_usr_is_covered_by_a_merge_in_every_version(bed: Container) -> None:
    make_extension(bed)
    bed.sdoverlay("unlock", check=True)
    bed.sh("echo mine > /usr/share/mine.txt")
    bed.run(["systemd-sysext", "merge"])
    found, problem = state(bed, "usr")
    assert found == "hidden" and problem.startswith(SYSEXT_COVER), problem
    # Its files show through the extensions, read-only.
    assert bed.run(["cat", "/usr/share/mine.txt"]).stdout == "mine\n"
    assert "Read-only file system" in bed.sh("echo x > /usr/share/other.txt", check=False).stderr
    bed.run(["systemd-sysext", "unmerge"])
    assert state(bed, "usr") == ("active", None)
    bed.sh("echo x > /usr/share/other.txt")
    bed.sdoverlay("remove", "usr", check=True)
    nothing_left(bed)


def test_overlays_made_after_a_merge(bed: Container) -> None:
    make_extension(bed)
    bed.run(["systemd-sysext", "merge"])
    before = (listed(bed), bed.sh("findmnt -rn -o TARGET,SOURCE").stdout)
    # On the hierarchy itself the overlay would hide the merge from systemd-sysext.
    result = bed.sdoverlay("unlock")
    assert result.returncode == 4 and result.stderr.count("\n") == 1, result.stderr
    assert "systemd-sysext has merged extensions into /usr: an overlay on it would hide the merge" in result.stderr
    result = bed.sdoverlay("unlock", "/usr/share/info", "--json")
    if systemd_version(bed) < 256:
        # 252's unmerge would take it, and what was written to it, along.
        assert result.returncode == 4 and result.stderr.count("\n") == 1, result.stderr
        assert "would be lost; run 'systemd-sysext unmerge' first" in result.stderr
        assert (listed(bed), bed.sh("findmnt -rn -o TARGET,SOURCE").stdout) == before
        bed.run(["systemd-sysext", "unmerge"])
    else:
        assert json.loads(result.stdout)["state"] == "active", result.stderr
        bed.sh("echo w > /usr/share/info/w.txt")
        assert bed.run(["cat", "/usr/share/man/fromext.txt"]).stdout == "fromext\n"
        bed.run(["systemd-sysext", "unmerge"])
        assert state(bed, "usr-share-info") == ("active", None)
        assert bed.run(["cat", "/usr/share/info/w.txt"]).stdout == "w\n"
        bed.sdoverlay("remove", "usr-share-info", check=True)
    nothing_left(bed)
