"""diff and export (issue 10) on a real systemd: what an overlay changed,
and the same as a system extension that systemd-sysext merges."""

from __future__ import annotations

import json

from tests.testbed import NOBODY, Container

DOC = "/usr/share/doc"
# Packages every Debian system has (Essential: yes), each with the
# copyright file Debian policy requires of it.
CHANGES = f"""
cd {DOC}
echo new > new.txt
echo more >> bash/copyright
rm coreutils/copyright
mv dpkg/copyright dpkg/copyright.moved
chmod 600 base-files/copyright
rm -r tar
rm -r gzip && mkdir gzip && echo x > gzip/x
"""
EXPECTED_TEXT = f"""\
M {DOC}/base-files/copyright
M {DOC}/bash/copyright
D {DOC}/coreutils/copyright
D {DOC}/dpkg/copyright
A {DOC}/dpkg/copyright.moved
R {DOC}/gzip
A {DOC}/gzip/x
A {DOC}/new.txt
D {DOC}/tar
"""


def mounts(bed: Container) -> str:
    return bed.run(["findmnt", "-rn", "-o", "ID,TARGET,FSTYPE"]).stdout


def test_diff_names_exactly_what_changed_in_both_outputs(bed: Container) -> None:
    bed.sdoverlay("unlock", DOC, "--name", "changed", check=True)
    bed.sh(CHANGES)
    before = mounts(bed)

    text = bed.sdoverlay("diff", "changed", check=True).stdout
    found = json.loads(bed.sdoverlay("diff", "changed", "--json", check=True).stdout)

    assert text == EXPECTED_TEXT
    assert [(entry["change"], entry["path"], entry["type"]) for entry in found] == [
        ("modified", f"{DOC}/base-files/copyright", "file"),
        ("modified", f"{DOC}/bash/copyright", "file"),
        ("deleted", f"{DOC}/coreutils/copyright", "file"),
        ("deleted", f"{DOC}/dpkg/copyright", "file"),
        ("added", f"{DOC}/dpkg/copyright.moved", "file"),
        ("replaced", f"{DOC}/gzip", "dir"),
        ("added", f"{DOC}/gzip/x", "file"),
        ("added", f"{DOC}/new.txt", "file"),
        ("deleted", f"{DOC}/tar", "dir"),
    ]
    by_path = {entry["path"]: entry for entry in found}
    assert by_path[f"{DOC}/base-files/copyright"]["modified"] == ["mode"]
    assert by_path[f"{DOC}/bash/copyright"]["modified"] == ["content"]
    assert by_path[f"{DOC}/gzip"]["previous_type"] == "dir"
    assert by_path[f"{DOC}/new.txt"]["size"] == 4
    stat = json.loads(bed.sdoverlay("diff", "changed", "--stat", "--json", check=True).stdout)
    assert {key: stat[key] for key in ("added", "modified", "deleted", "replaced")} == {
        "added": 3, "modified": 2, "deleted": 3, "replaced": 1}
    assert bed.sdoverlay("diff", "changed", "--stat", check=True).stdout.startswith(
        "3 added, 2 modified, 3 deleted, 1 replaced; ")
    # The original was seen in a mount namespace of the diff's own: the
    # system's mounts are as they were, the overlay still on top.
    assert mounts(bed) == before
    assert bed.sh(f"cat {DOC}/new.txt").stdout == "new\n"


def test_diff_and_export_refusals_are_one_line_and_leave_nothing(bed: Container) -> None:
    bed.sdoverlay("unlock", DOC, "--name", "roots", check=True)
    bed.sh(f"echo x > {DOC}/added.txt; rm {DOC}/bash/copyright")
    cases = [
        (["diff", "nothere"], 3, "sdoverlay: no overlay named 'nothere'\n"),
        (["export", "nothere", "/var/lib/extensions/x"], 3, "sdoverlay: no overlay named 'nothere'\n"),
        (["diff"], 2, None),
        (["export", "roots"], 2, None),
        (["export", "roots", "/var/lib/extensions/.hidden"], 2, None),
        (["export", "roots", "/var/lib/extensions/roots"], 2,
         "sdoverlay: cannot export overlay 'roots': an extension cannot delete, and it deleted 1 path(s): "
         f"{DOC}/bash/copyright (--ignore-deletions to export without them)\n"),
        (["export", "roots", "/etc"], 4, "sdoverlay: cannot export to /etc: it exists already\n"),
    ]
    for args, code, message in cases:
        result = bed.sdoverlay(*args)
        assert result.returncode == code, (args, result.stderr)
        assert result.stderr.count("\n") == 1, (args, result.stderr)
        if message is not None:
            assert result.stderr == message
    other = bed.sdoverlay("diff", "roots", "--no-ask-password", user=NOBODY)
    assert other.returncode == 5 and "belongs to uid 0, not 65534" in other.stderr
    other = bed.sdoverlay("export", "roots", "/tmp/mine", "--no-ask-password", user=NOBODY)
    assert other.returncode == 5 and "belongs to uid 0, not 65534" in other.stderr
    # Nothing was written, not even the parent of DEST.
    assert bed.sh("ls -d /var/lib/extensions /tmp/mine 2>/dev/null || true").stdout == ""

    # Only /usr and /opt can be extended: an overlay elsewhere is refused.
    bed.sh("mkdir -p /etc/sdoverlay /srv/tree && echo '[Overlays]\nAllowedRoots=/usr /srv' > /etc/sdoverlay/sdoverlay.conf")
    bed.sdoverlay("unlock", "/srv/tree", "--name", "elsewhere", check=True)
    bed.sh("echo x > /srv/tree/file")
    refused = bed.sdoverlay("export", "elsewhere", "/var/lib/extensions/elsewhere")
    assert refused.returncode == 2 and refused.stderr == (
        "sdoverlay: cannot export overlay 'elsewhere': its target /srv/tree is not under /usr or /opt, "
        "the trees a system extension can carry\n")
    assert bed.sh("ls -d /var/lib/extensions 2>/dev/null || true").stdout == ""


def test_export_is_merged_by_systemd_sysext(bed: Container) -> None:
    """export -> remove -> systemd-sysext merge: the same files under /usr; unmerge: gone."""
    bed.sdoverlay("unlock", DOC, "--name", "keep", check=True)
    bed.sh(f"""
        cd {DOC}
        echo new > new.txt
        echo exported-line >> bash/copyright
        mkdir -p made/deeper && echo deep > made/deeper/file && chmod 640 made/deeper/file
        ln -s ../bash/copyright made/link
    """)
    changed = bed.sh(f"cd {DOC} && sha256sum new.txt bash/copyright made/deeper/file && stat -c '%n %a %U' "
                     "made made/deeper made/deeper/file && readlink made/link").stdout

    outcome = json.loads(bed.sdoverlay("export", "keep", "/var/lib/extensions/keep", "--version", "1.2",
                                       "--json", check=True).stdout)

    assert outcome["extension"] == "keep" and outcome["paths"] == 6 and outcome["ignored_deletions"] == []
    release = bed.sh("cat /var/lib/extensions/keep/usr/lib/extension-release.d/extension-release.keep").stdout
    host = dict(line.split("=", 1) for line in bed.sh(". /usr/lib/os-release; echo ID=$ID; echo VERSION_ID=$VERSION_ID")
                .stdout.split())
    assert f"ID={host['ID']}\n" in release and f"VERSION_ID={host['VERSION_ID']}\n" in release
    assert "ARCHITECTURE=" in release and "SYSEXT_VERSION_ID=1.2\n" in release
    bed.sdoverlay("remove", "keep", check=True)
    assert bed.sh(f"ls {DOC}/new.txt 2>/dev/null || echo gone").stdout == "gone\n"

    bed.run(["systemd-sysext", "merge"])
    assert "keep" in bed.run(["systemd-sysext", "status"]).stdout
    assert bed.sh(f"cd {DOC} && sha256sum new.txt bash/copyright made/deeper/file && stat -c '%n %a %U' "
                  "made made/deeper made/deeper/file && readlink made/link").stdout == changed

    bed.run(["systemd-sysext", "unmerge"])
    assert bed.sh(f"ls {DOC}/new.txt {DOC}/made 2>/dev/null || echo gone").stdout == "gone\n"
    assert "exported-line" not in bed.sh(f"cat {DOC}/bash/copyright").stdout


def test_raw_export_is_refused_where_systemd_cannot_build_it(bed: Container) -> None:
    """systemd 252 has no systemd-repart --make-ddi: a clear refusal, nothing written."""
    bed.sdoverlay("unlock", DOC, "--name", "raw", check=True)
    bed.sh(f"echo x > {DOC}/x.txt")
    result = bed.sdoverlay("export", "raw", "/var/lib/extensions/raw.raw", "--format=raw")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("sdoverlay: cannot build a raw image here: systemd-repart ")
    assert result.stderr.endswith("use --format=directory\n") and result.stderr.count("\n") == 1
    assert bed.sh("ls -d /var/lib/extensions 2>/dev/null || true").stdout == ""
