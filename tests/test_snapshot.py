"""sdoverlay.snapshot against cp -a, which it replaced for SOURCEs (issue 9):
the same copy, and a record of it that equals validate.scan's walk of it."""

from __future__ import annotations

import json
import os

import pytest

from sdoverlay import snapshot
from tests.testbed import REPO, VENV, Container


def copies(bed: Container, mode: str) -> dict:
    script = f"import sys; sys.path.insert(0, {str(REPO)!r}); from tests import copycheck; copycheck.main({mode!r})"
    return json.loads(bed.run([str(VENV / "bin" / "python"), "-c", script]).stdout)


def differences(by_cp: dict, ours: dict) -> list:
    return [(path, by_cp.get(path), ours.get(path)) for path in sorted(set(by_cp) | set(ours))
            if by_cp.get(path) != ours.get(path)]


@pytest.mark.parametrize("mode", ["root-keep", "user"])
def test_copy_is_what_cp_a_makes(bed: Container, mode: str) -> None:
    result = copies(bed, mode)
    assert differences(result["cp"], result["ours"]) == []
    assert len(result["ours"]) >= 25
    assert result["found"] == result["scanned"]


def test_root_copy_without_kept_owners_is_roots(bed: Container) -> None:
    result = copies(bed, "root")
    by_cp = {path: [kind, 0, 0, *rest] for path, (kind, _uid, _gid, *rest) in result["cp"].items()}
    assert differences(by_cp, result["ours"]) == []
    assert result["found"] == result["scanned"]
    assert result["found"]["not_root_owned"] == []
    assert {path.rsplit("/", 1)[-1] for path in result["found"]["privileged"]} == {"capable", "suid", "sgid"}
    assert {path.rsplit("/", 1)[-1] for path in result["found"]["world_writable"]} == {"world-writable", "opaque"}


def test_devices_fifos_and_sockets_are_recorded_not_made(bed: Container) -> None:
    result = copies(bed, "special")
    assert sorted(result["found"]["special"]) == ["/run/copycheck/ours/a/fifo", "/run/copycheck/ours/socket"]
    assert "a/fifo" not in result["ours"] and "socket" not in result["ours"]
    # The rest is copied all the same (cp -a makes both).
    del result["cp"]["a/fifo"], result["cp"]["socket"]
    assert differences(result["cp"], result["ours"]) == []


def test_a_dir_swapped_for_a_symlink_is_not_followed(tmp_path) -> None:
    """What the copy does when a dir it listed is a symlink by the time it
    enters it (the race, made certain: it is asked to enter the symlink)."""
    (tmp_path / "source").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "secret").write_text("not to be copied")
    (tmp_path / "source" / "swapped").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "copy").mkdir()
    fd = os.open(tmp_path / "source", os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(snapshot.CopyFailed, match="swapped: Not a directory"):
            snapshot._Copier(keep_ownership=False).tree(fd, "swapped", f"{tmp_path}/source/swapped",
                                                         f"{tmp_path}/copy")
    finally:
        os.close(fd)
    assert not (tmp_path / "copy" / "secret").exists()
    # Listed as what it is, a symlink, it is copied as one.
    snapshot.copy(f"{tmp_path}/source", f"{tmp_path}/copy", keep_ownership=False)
    assert os.readlink(tmp_path / "copy" / "swapped") == str(tmp_path / "elsewhere")


def test_a_failed_copy_says_where_and_keeps_no_dir_open(tmp_path) -> None:
    """A copy that fails two dirs deep: a DESTINATION so long that a/ and
    a/b/ can be made in it, a/b/file not (PATH_MAX)."""
    (tmp_path / "source" / "a" / "b").mkdir(parents=True)
    (tmp_path / "source" / "a" / "b" / "file").write_text("data")
    destination = str(tmp_path / "copy")
    while len(destination) < 4089 - 200:
        destination += "/" + "d" * 199
    destination += "/" + "e" * (4089 - len(destination) - 1)
    assert len(destination) == 4089
    os.makedirs(destination)
    open_before = sorted(os.listdir("/proc/self/fd"))
    with pytest.raises(snapshot.CopyFailed, match="/a/b/file: File name too long$"):
        snapshot.copy(f"{tmp_path}/source", destination, keep_ownership=False)
    assert os.path.isdir(f"{destination}/a/b")
    assert sorted(os.listdir("/proc/self/fd")) == open_before
