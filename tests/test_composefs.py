"""sdoverlay on a composefs-shaped root (tests/composefs.py): /usr is an
overlay already, so sdoverlay's overlay takes the second and last level
the kernel stacks; what would need a third fails with one line naming the
limit and leaves nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.composefs import composefs_root
from tests.conftest import require_test_bed
from tests.test_overlays import listed, snapshot
from tests.testbed import Container


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[Container]:
    require_test_bed()
    with composefs_root(tmp_path) as root, Container(root=str(root)) as container:
        yield container


def test_overlays_on_a_composefs_root_and_the_stacking_limit(bed: Container) -> None:
    assert bed.run(["findmnt", "-no", "FSTYPE,SOURCE", "/usr"]).stdout.split() == ["overlay", "composefs"]
    empty = snapshot(bed)  # composefs' own overlay on /usr, nothing of ours
    bed.sh("mkdir -p /srv/src && echo applied > /srv/src/applied.txt")
    # The second level: unlock /usr, apply below it.
    bed.sdoverlay("unlock", check=True)
    bed.sh("echo mine > /usr/share/mine.txt")
    assert listed(bed)["usr"]["state"] == "active"
    bed.sdoverlay("remove", "usr", check=True)
    bed.sdoverlay("apply", "doc", "/srv/src", "/usr/share/doc", check=True)
    assert bed.run(["cat", "/usr/share/doc/applied.txt"]).stdout == "applied\n"
    bed.sdoverlay("remove", "doc", check=True)
    assert snapshot(bed) == empty
    # A third: below an overlay made by hand on /usr/share/info.
    bed.sh("mkdir -p /tmp/u /tmp/w && mount -t overlay overlay"
           " -o lowerdir=/usr/share/info,upperdir=/tmp/u,workdir=/tmp/w /usr/share/info && mkdir -p /usr/share/info/sub")
    before = snapshot(bed)
    result = bed.sdoverlay("unlock", "/usr/share/info/sub")
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "overlayfs: maximum fs stacking depth exceeded" in result.stderr
    assert "the kernel stacks at most 2 file systems (FILESYSTEM_MAX_STACK_DEPTH" in result.stderr
    assert snapshot(bed) == before
    bed.run(["umount", "/usr/share/info"])
    # systemd-sysext's merge over an unlocked /usr would be a third: it fails
    # and the overlay stays as it was.
    bed.sdoverlay("unlock", "/usr/share/man", "--name", "ext", check=True)
    bed.sh("echo fromext > /usr/share/man/fromext.txt")
    bed.sdoverlay("export", "ext", "/var/lib/extensions/ext", check=True)
    bed.sdoverlay("remove", "ext", check=True)
    bed.sdoverlay("unlock", check=True)
    merge = bed.run(["systemd-sysext", "merge"], check=False)
    assert merge.returncode != 0, merge.stdout
    assert listed(bed)["usr"]["state"] == "active"
    bed.sh("echo still > /usr/share/still.txt")
    bed.sdoverlay("remove", "usr", check=True)
    # Without it, the merge has its level.
    bed.run(["systemd-sysext", "merge"])
    assert bed.run(["cat", "/usr/share/man/fromext.txt"]).stdout == "fromext\n"
    bed.run(["systemd-sysext", "unmerge"])
    assert snapshot(bed) == empty
