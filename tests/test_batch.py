"""apply --from FILE and remove --all (issue 10) on a real systemd."""

from __future__ import annotations

import json

import pytest

from tests.test_boot import INSTALL_GENERATOR
from tests.test_overlays import SOURCE_TREE, listed
from tests.test_robust import nothing_left
from tests.testbed import NOBODY, Container

DOC = "/usr/share/doc"


def batch(fourth: str) -> str:
    """Five overlays, the fourth as given."""
    return f"""
# five overlays
[Overlay]
Name=one
Target={DOC}/bash

[Overlay]
Name=two
Source=/srv/src
Target={DOC}/tar
ReadOnly=yes

[Overlay]
Name=three
Target={DOC}/gzip
Size=16M

[Overlay]
{fourth}

[Overlay]
Name=five
Source=/srv/src
Target={DOC}/coreutils
"""


VALID_FOURTH = f"Name=four\nTarget={DOC}/dpkg"


@pytest.mark.parametrize("fourth, code, message", [
    # Refused before anything is made:
    (f"Name=four\nTarget={DOC}/dpkg\nSize=lots", 2, "overlay 4 of 5 (four): invalid size 'lots'"),
    (f"Name=four\nTarget={DOC}/dpkg\nColour=blue", 2, "overlay 4 of 5: unknown key Colour=; none was created"),
    ("Name=one\nTarget=/usr/share/doc/dpkg", 2, "overlay 4 of 5: Name=one is given twice; none was created"),
    # Fails once three are made, which are removed again:
    (f"Name=four\nSource=/srv/missing\nTarget={DOC}/dpkg", 3,
     "overlay 4 of 5 (four): source /srv/missing does not exist; removed again the 3 created before it "
     "(one, two, three)"),
    (f"Name=four\nTarget={DOC}/bash", 4, "overlay 4 of 5 (four): "),
])
def test_a_batch_with_a_bad_fourth_creates_nothing(bed: Container, fourth: str, code: int, message: str) -> None:
    bed.sh(SOURCE_TREE)
    bed.sh(f"cat > /srv/batch.conf <<'EOF'\n{batch(fourth)}\nEOF")
    result = bed.sdoverlay("apply", "--from", "/srv/batch.conf")
    assert result.returncode == code, result.stderr
    assert result.stderr.startswith(f"sdoverlay: {message}") and result.stderr.count("\n") == 1, result.stderr
    if code in (3, 4):
        assert result.stderr.endswith("; removed again the 3 created before it (one, two, three)\n")
    nothing_left(bed)


def test_a_valid_batch_creates_all_and_remove_all_removes_them(bed: Container) -> None:
    bed.sh(SOURCE_TREE)
    bed.sh(f"cat > /srv/batch.conf <<'EOF'\n{batch(VALID_FOURTH)}\nEOF")
    created = json.loads(bed.sdoverlay("apply", "--from", "/srv/batch.conf", "--json", check=True).stdout)
    assert [status["name"] for status in created] == ["one", "two", "three", "four", "five"]
    overlays = listed(bed)
    assert {name: entry["state"] for name, entry in overlays.items()} == dict.fromkeys(
        ["one", "two", "three", "four", "five"], "active")
    assert overlays["two"]["read_only"] and overlays["two"]["source"] == "/srv/src"
    assert overlays["three"]["size_limit_bytes"] == 16 * 1024 * 1024
    assert bed.sh(f"cat {DOC}/coreutils/top.txt").stdout == "applied\n"

    # Someone else's --all touches none of root's; their --user 0 is refused for each.
    mine = bed.sdoverlay("remove", "--all", "--no-ask-password", user=NOBODY)
    assert mine.returncode == 0 and mine.stdout == "0 of 0 overlay(s) removed.\n"
    theirs = bed.sdoverlay("remove", "--all", "--user", "0", "--no-ask-password", user=NOBODY)
    assert theirs.returncode == 5 and theirs.stdout.endswith("0 of 5 overlay(s) removed.\n")
    assert len(theirs.stderr.splitlines()) == 5 and "belongs to uid 0, not 65534" in theirs.stderr
    assert len(listed(bed)) == 5

    removed = bed.sdoverlay("remove", "--all", check=True).stdout
    assert removed.endswith("5 of 5 overlay(s) removed.\n")
    nothing_left(bed)


def test_batch_and_remove_all_usage_errors(bed: Container) -> None:
    bed.sh("mkfifo /srv/fifo.conf")
    for args, text in [
        (["remove"], "remove takes NAME, or --all [--user UID]"),
        (["remove", "x", "--all"], "remove takes NAME, or --all [--user UID]"),
        (["remove", "x", "--user", "0"], "remove takes NAME, or --all [--user UID]"),
        (["apply", "--from", "/srv/b.conf", "n"], "--from takes the overlays and their options from FILE only"),
        (["apply", "n", "/srv"], "apply takes NAME SOURCE... TARGET, or --from FILE"),
        (["apply", "--from", "/srv/none.conf"], "cannot read /srv/none.conf: No such file or directory"),
        (["apply", "--from", "/srv/fifo.conf"], "cannot read /srv/fifo.conf: not a regular file (a FIFO)"),
    ]:
        result = bed.sdoverlay(*args)
        assert result.returncode == 2 and text in result.stderr and result.stderr.count("\n") == 1, (args, result)
    bed.sh("printf '[Overlay]\\nName=p\\nTarget=/usr/share/doc/bash\\nPersistent=yes\\n' > /srv/p.conf")
    result = bed.sdoverlay("apply", "--from", "/srv/p.conf")
    assert result.returncode == 2 and "Persistent=yes is for drop-ins in /etc/sdoverlay.d" in result.stderr
    nothing_left(bed)


LAYERS = """
mkdir -p /srv/l1/sub /srv/l2/sub /srv/l3/sub
echo 1 > /srv/l1/a.txt; echo 1 > /srv/l1/b.txt; echo 1 > /srv/l1/only1.txt; echo 1 > /srv/l1/sub/x
echo 2 > /srv/l2/a.txt; echo 2 > /srv/l2/b.txt; echo 2 > /srv/l2/sub/y
echo 3 > /srv/l3/a.txt; echo 3 > /srv/l3/sub/x
"""
LAYERED_VIEW = {"a.txt": "3", "b.txt": "2", "only1.txt": "1", "sub/x": "3", "sub/y": "2"}


def test_layered_sources_the_last_is_on_top_and_persist_keeps_them(bed: Container) -> None:
    """apply NAME SOURCE... TARGET (issue 10): three SOURCEs with overlapping names."""
    bed.sh(LAYERS + INSTALL_GENERATOR)
    status = json.loads(bed.sdoverlay("apply", "layered", "/srv/l1", "/srv/l2", "/srv/l3", f"{DOC}/bash", "--json",
                                      check=True).stdout)
    assert status["sources"] == ["/srv/l1", "/srv/l2", "/srv/l3"] and status["source"] == "/srv/l1:/srv/l2:/srv/l3"

    def view() -> dict[str, str]:
        return {path: bed.sh(f"cat {DOC}/bash/{path}").stdout.strip() for path in LAYERED_VIEW}

    assert view() == LAYERED_VIEW
    assert listed(bed)["layered"]["sources"] == ["/srv/l1", "/srv/l2", "/srv/l3"]
    assert json.loads(bed.sdoverlay("status", "layered", "--json", check=True).stdout)["sources"] == [
        "/srv/l1", "/srv/l2", "/srv/l3"]
    added = {entry["path"] for entry in json.loads(bed.sdoverlay("diff", "layered", "--json", check=True).stdout)}
    assert added == {f"{DOC}/bash/{path}" for path in ["a.txt", "b.txt", "only1.txt", "sub", "sub/x", "sub/y"]}
    bed.sh(f"echo written > {DOC}/bash/a.txt")
    bed.sdoverlay("reset", "layered", check=True)
    assert view() == LAYERED_VIEW  # the layers stay; what was written goes

    persisted = json.loads(bed.sdoverlay("persist", "layered", "--json", check=True).stdout)
    assert persisted["sources"] == [f"/var/lib/sdoverlay/layered/content/{index}" for index in range(3)]
    assert view() == LAYERED_VIEW
    assert f"Source={persisted['source']}\n" in bed.sh("cat /etc/sdoverlay.d/layered.conf").stdout
    bed.sdoverlay("remove", "layered", check=True)
    nothing_left(bed)

    refused = bed.sdoverlay("apply", "bad", "/srv/l1", "/srv/nothere", f"{DOC}/bash")
    assert refused.returncode == 3 and refused.stderr == "sdoverlay: source /srv/nothere does not exist\n"
    too_big = bed.sdoverlay("apply", "big", "/srv/l1", "/srv/l2", f"{DOC}/bash", "--size", "8k")
    assert too_big.returncode == 6 and too_big.stderr.startswith("sdoverlay: sources /srv/l1 /srv/l2 need ")
    nothing_left(bed)
