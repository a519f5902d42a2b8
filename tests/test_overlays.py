"""Behaviour on a real systemd: each test boots its own throwaway container."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator

import pytest

from tests.testbed import NOBODY, Container

SOURCE_TREE = """
mkdir -p /srv/src/sub
echo applied > /srv/src/top.txt
echo deep > /srv/src/sub/deep.txt
"""

# Two overlays stacked by hand on /usr/share and /usr/share/doc leave no
# room for a third layer below them: the kernel refuses an overlay on
# /usr/share/doc/dpkg with "maximum fs stacking depth exceeded".
NO_ROOM_BELOW_DOC = """
    mkdir -p /tmp/a/u /tmp/a/w /tmp/b/u /tmp/b/w
    mount -t overlay overlay -o lowerdir=/usr/share,upperdir=/tmp/a/u,workdir=/tmp/a/w /usr/share
    mount -t overlay overlay -o lowerdir=/usr/share/doc,upperdir=/tmp/b/u,workdir=/tmp/b/w /usr/share/doc
"""


def overlay_units(bed: Container) -> list[str]:
    """Every unit of ours systemd knows, in any state."""
    out = bed.run(["systemctl", "list-units", "--all", "--plain", "--no-legend", "*usroverlay*"]).stdout
    return sorted(line.split()[0] for line in out.splitlines() if line.strip())


def overlay_mounts(bed: Container) -> list[str]:
    out = bed.run(["findmnt", "-rn", "-t", "overlay,tmpfs", "-o", "TARGET,FSTYPE,OPTIONS"]).stdout
    return sorted(line for line in out.splitlines() if "usroverlay" in line or line.startswith("/usr"))


def area_entries(bed: Container) -> list[str]:
    return bed.sh("ls -A /run/usroverlay 2>/dev/null || true").stdout.split()


def snapshot(bed: Container) -> tuple[list[str], list[str], list[str]]:
    return overlay_units(bed), overlay_mounts(bed), area_entries(bed)


def listed(bed: Container) -> dict[str, dict]:
    result = bed.sdoverlay("list", "--json", check=True)
    return {entry["name"]: entry for entry in json.loads(result.stdout)}


def assert_gone(bed: Container, name: str, target: str) -> None:
    assert overlay_units(bed) == []
    assert bed.run(["findmnt", "-rn", "-t", "overlay", target], check=False).stdout == ""
    assert bed.run(["findmnt", "-rn", f"/run/usroverlay/{name}"], check=False).stdout == ""
    assert name not in area_entries(bed)


def test_apply_directory_tree_write_reset_remove(bed: Container) -> None:
    bed.sh(SOURCE_TREE)
    base_file = "/usr/share/doc/dpkg/copyright"
    result = bed.sdoverlay("apply", "demo", "/srv/src", "/usr/share/doc", check=True)
    assert "applied overlay 'demo'" in result.stdout

    assert bed.run(["cat", "/usr/share/doc/top.txt"]).stdout == "applied\n"
    assert bed.run(["cat", "/usr/share/doc/sub/deep.txt"]).stdout == "deep\n"
    assert bed.run(["test", "-f", base_file]).returncode == 0
    # A snapshot: editing SOURCE afterwards does not leak in.
    bed.sh("echo changed > /srv/src/top.txt; echo new > /srv/src/later.txt")
    assert bed.run(["cat", "/usr/share/doc/top.txt"]).stdout == "applied\n"
    assert bed.run(["test", "-e", "/usr/share/doc/later.txt"], check=False).returncode != 0
    # The target keeps its own owner and mode, not SOURCE's.
    assert bed.run(["stat", "-c", "%a %U", "/usr/share/doc"]).stdout == "755 root\n"

    # Writable, and the writes land in the upper dir in /run.
    bed.sh("echo written > /usr/share/doc/written.txt; echo edited > /usr/share/doc/top.txt; rm /usr/share/doc/dpkg/copyright")
    assert bed.run(["cat", "/run/usroverlay/demo/upper/written.txt"]).stdout == "written\n"
    assert "run-usroverlay-demo.mount" in overlay_units(bed)
    used_with_writes = listed(bed)["demo"]["area_used_bytes"]

    result = bed.sdoverlay("reset", "demo", check=True)
    assert "reset overlay 'demo'" in result.stdout
    assert bed.run(["test", "-e", "/usr/share/doc/written.txt"], check=False).returncode != 0
    assert bed.run(["cat", "/usr/share/doc/top.txt"]).stdout == "applied\n"
    assert bed.run(["test", "-f", base_file]).returncode == 0
    assert listed(bed)["demo"]["state"] == "active"
    assert listed(bed)["demo"]["area_used_bytes"] < used_with_writes
    bed.sh("touch /usr/share/doc/after-reset")  # still writable after reset

    result = bed.sdoverlay("remove", "demo", check=True)
    assert "removed overlay 'demo'" in result.stdout
    assert_gone(bed, "demo", "/usr/share/doc")
    assert bed.run(["test", "-e", "/usr/share/doc/top.txt"], check=False).returncode != 0


def test_reset_again_and_again(bed: Container) -> None:
    # Each reset must re-run the content unit to make new upper and work
    # dirs; a content unit left active would make the remount fail.
    bed.sh(SOURCE_TREE)
    bed.sdoverlay("apply", "again", "/srv/src", "/usr/share/doc", check=True)
    for round_number in range(6):
        bed.sh(f"echo {round_number} > /usr/share/doc/round.txt")
        bed.sdoverlay("reset", "again", check=True)
        assert bed.run(["test", "-e", "/usr/share/doc/round.txt"], check=False).returncode != 0
        assert bed.run(["cat", "/usr/share/doc/top.txt"]).stdout == "applied\n"
    assert overlay_units(bed) == ["run-usroverlay-again.mount", "usroverlay-again-content.service"]


def test_apply_file_lands_at_target_basename(bed: Container) -> None:
    bed.sh("printf '#!/bin/sh\\necho patched\\n' > /srv/tool; chmod 755 /srv/tool")
    bed.sdoverlay("apply", "tool", "/srv/tool", "/usr/share/common-licenses", check=True)
    assert bed.run(["/usr/share/common-licenses/tool"]).stdout == "patched\n"
    assert bed.run(["test", "-f", "/usr/share/common-licenses/GPL-3"]).returncode == 0
    bed.sh("touch /usr/share/common-licenses/writable")
    bed.sdoverlay("remove", "tool", check=True)
    assert_gone(bed, "tool", "/usr/share/common-licenses")


def test_read_only_overlay(bed: Container) -> None:
    bed.sh(SOURCE_TREE)
    bed.sdoverlay("apply", "--read-only", "ro", "/srv/src", "/usr/share/doc", check=True)
    assert bed.run(["cat", "/usr/share/doc/top.txt"]).stdout == "applied\n"
    touch = bed.run(["touch", "/usr/share/doc/nope"], check=False)
    assert touch.returncode != 0 and "Read-only file system" in touch.stderr
    entry = listed(bed)["ro"]
    assert entry["read_only"] is True and entry["area_used_bytes"] > 0
    assert bed.sh("ls -A /run/usroverlay/ro").stdout.split() == ["content"]
    bed.sdoverlay("remove", "ro", check=True)
    assert_gone(bed, "ro", "/usr/share/doc")


def test_list_json_fields_survive_reload_and_reexec(bed: Container) -> None:
    bed.sh(SOURCE_TREE)
    bed.sdoverlay("apply", "--size", "64M", "meta", "/srv/src", "/usr/share/doc", check=True)
    before = listed(bed)["meta"]
    assert before["name"] == "meta"
    assert before["target"] == "/usr/share/doc"
    assert before["source"] == "/srv/src"
    assert before["owner_uid"] == 0
    assert before["read_only"] is False
    assert before["size_limit_bytes"] == 64 * 1024 * 1024
    assert before["state"] == "active"
    assert before["units"] == ["run-usroverlay-meta.mount", "usroverlay-meta-content.service", "usr-share-doc.mount"]
    assert before["created_at"].endswith("Z") and before["created_at"][10] == "T"
    text = bed.sdoverlay("list", check=True).stdout
    assert "meta" in text and "/usr/share/doc" in text and "64.0M" in text

    # The metadata is in the area unit's LogExtraFields=, not in its mount
    # options: mount(8) would keep those in libmount's utab, which slows
    # every later mount change on the system (issue 9).
    fields = bed.run(["systemctl", "show", "-P", "LogExtraFields", "run-usroverlay-meta.mount"]).stdout
    assert "SDOVERLAY_METADATA=x-sdoverlay.name=meta," in fields and "SDOVERLAY_NAME=meta" in fields
    assert "x-sdoverlay" not in bed.run(["systemctl", "show", "-P", "Options", "run-usroverlay-meta.mount"]).stdout
    assert "usroverlay" not in bed.sh("cat /run/mount/utab 2>/dev/null || true").stdout

    # Metadata lives in the units only; systemd must keep it across both.
    for command in ("daemon-reload", "daemon-reexec"):
        bed.run(["systemctl", command])
        bed.run(["systemctl", "is-system-running", "--wait"], check=False)
        assert listed(bed)["meta"] == before, command
    assert "run-usroverlay-meta.mount" in overlay_units(bed)

    filtered = bed.sdoverlay("list", "--json", "--user", "1000", check=True)
    assert json.loads(filtered.stdout) == []

    # list reads the metadata from systemd's transient unit file (no D-Bus
    # call per overlay); where that file does not have it, from the unit's
    # property over D-Bus. (systemd reads the file again only on a reload.)
    unit_file = "/run/systemd/transient/run-usroverlay-meta.mount"
    bed.sh(f"sed -i '/^LogExtraFields=SDOVERLAY_METADATA=/d' {unit_file}")
    assert "SDOVERLAY_METADATA" not in bed.run(["cat", unit_file]).stdout
    assert listed(bed)["meta"] == before
    bed.sdoverlay("remove", "meta", check=True)
    assert_gone(bed, "meta", "/usr/share/doc")


def test_unlock_usr_itself_and_remove(bed: Container) -> None:
    # /usr is a mount point in the test bed, as on image-based systems.
    assert bed.run(["findmnt", "-rn", "/usr"]).stdout
    result = bed.sdoverlay("unlock", "--json", check=True)
    entry = json.loads(result.stdout)
    assert entry["name"] == "usr" and entry["target"] == "/usr" and entry["source"] is None
    assert entry["units"] == ["run-usroverlay-usr.mount", "usroverlay-usr-content.service", "usroverlay-usr.service"]
    assert entry["lazy_unmount"] is True
    bed.sh("printf '#!/bin/sh\\necho hotfix\\n' > /usr/bin/sdo-hello; chmod +x /usr/bin/sdo-hello")
    assert bed.run(["sdo-hello"]).stdout == "hotfix\n"
    assert "usroverlay-usr.service" in overlay_units(bed)

    # umount(8) itself runs from the overlay: only a lazy unmount removes it.
    bed.sdoverlay("remove", "usr", check=True)
    assert_gone(bed, "usr", "/usr")
    assert bed.run(["test", "-e", "/usr/bin/sdo-hello"], check=False).returncode != 0
    assert bed.run(["touch", "/usr/bin/x"], check=False).returncode != 0


def test_unlock_usr_bin_as_mount_unit(bed: Container) -> None:
    entry = json.loads(bed.sdoverlay("unlock", "/usr/bin", "--name", "bin", "--json", check=True).stdout)
    assert entry["units"] == ["run-usroverlay-bin.mount", "usroverlay-bin-content.service", "usr-bin.mount"]
    bed.sh("touch /usr/bin/sdo-marker")
    bed.sdoverlay("reset", "bin", check=True)
    assert bed.run(["test", "-e", "/usr/bin/sdo-marker"], check=False).returncode != 0
    bed.sdoverlay("remove", "bin", check=True)
    assert_gone(bed, "bin", "/usr/bin")


def test_refusals_change_nothing(bed: Container) -> None:
    bed.sh(SOURCE_TREE)
    bed.sdoverlay("apply", "first", "/srv/src", "/usr/share/doc", check=True)
    before = snapshot(bed)
    cases = [
        (["apply", "first", "/srv/src", "/usr/share/man"], 4, "an overlay named 'first' exists already"),
        (["apply", "second", "/srv/src", "/usr/share/doc"], 4, "overlaps /usr/share/doc, the target of overlay 'first'"),
        (["apply", "second", "/srv/src", "/usr/share/doc/dpkg"], 4, "overlaps /usr/share/doc"),
        (["apply", "second", "/srv/src", "/usr/share"], 4, "overlaps /usr/share/doc"),
        (["apply", "second", "/srv/missing", "/usr/share/man"], 3, "source /srv/missing does not exist"),
        (["apply", "second", "/srv/src", "/usr/share/missing"], 3, "target /usr/share/missing does not exist"),
        (["apply", "second", "/srv/src", "/etc"], 2, "is not at or under an allowed root (/usr)"),
        (["apply", "second", "/srv/src", "usr/share"], 2, "is not an absolute path"),
        (["apply", "-bad", "/srv/src", "/usr/share/man"], 2, "No such option"),
        (["apply", "bad.name", "/srv/src", "/usr/share/man"], 2, "invalid overlay name 'bad.name'"),
        (["apply", "--size", "lots", "second", "/srv/src", "/usr/share/man"], 2, "invalid size 'lots'"),
        (["apply", "second", "/srv/src", "/usr/share/doc/dpkg/copyright"], 2, "is not a directory"),
        (["remove", "nosuch"], 3, "no overlay named 'nosuch'"),
        (["reset", "nosuch"], 3, "no overlay named 'nosuch'"),
    ]
    for args, code, message in cases:
        result = bed.sdoverlay(*args)
        assert result.returncode == code, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert result.stderr.count("\n") == 1, result.stderr
        assert snapshot(bed) == before, args


def test_non_root_caller_is_refused_and_nothing_created(bed: Container) -> None:
    bed.sh(SOURCE_TREE + "chmod -R a+rX /srv/src")
    before = snapshot(bed)
    # /usr is outside UserAllowedRoots=: its own action, which an administrator authorizes.
    for args, action in ((["apply", "user", "/srv/src", "/usr/share/doc"], "create"),
                         (["unlock"], "create-outside-user-roots")):
        result = bed.sdoverlay(*args, user=NOBODY)
        assert result.returncode == 5, result.stderr
        assert f"uid 65534 may not do this: polkit action org.sdoverlay.{action}: not allowed" in result.stderr
        assert result.stderr.count("\n") == 1
        assert snapshot(bed) == before
    # Reading is for everyone, the memory used (statvfs of the area) included.
    assert bed.sdoverlay("list", "--json", user=NOBODY, check=True).stdout.strip() == "[]"
    bed.sdoverlay("apply", "rootonly", "/srv/src", "/usr/share/doc", check=True)
    bed.sh("echo x > /usr/share/doc/written.txt")
    (entry,) = json.loads(bed.sdoverlay("list", "--json", user=NOBODY, check=True).stdout)
    assert entry["name"] == "rootonly" and entry["area_used_bytes"] > 0 and entry["size_limit_bytes"] > 0
    assert entry == listed(bed)["rootonly"]


def test_non_root_cannot_remove_root_overlay(bed: Container) -> None:
    bed.sdoverlay("unlock", "/usr/share/man", check=True)
    before = snapshot(bed)
    result = bed.sdoverlay("remove", "usr-share-man", user=NOBODY)
    assert result.returncode == 5, result.stderr
    assert snapshot(bed) == before


@contextlib.contextmanager
def another_shell_mounting(bed: Container, mount: str, logged: str) -> Iterator[None]:
    """Another shell runs MOUNT, a mount the kernel refuses, in a loop while
    the body runs; it must have logged LOGGED at least 5 times meanwhile,
    or the body's check proves nothing."""
    # No pause between tries: with one of 0.005 s (a sleep process each) a
    # 0.1 s apply sometimes saw only 4 tries.
    # Counted by their stamps after the newest record before the loop: a
    # count of matching lines saturates once they fill the kernel's ring.
    since = _kernel_stamps(bed)[-1:] or [0.0]
    bed.sh(f"(while :; do {mount} 2>/dev/null || true; done) >/dev/null 2>&1 & echo $! > /tmp/other-shell")
    try:
        yield
    finally:
        bed.sh("kill $(cat /tmp/other-shell)")
    meanwhile = len(_kernel_stamps(bed, logged, after=since[0]))
    assert meanwhile >= 5, f"the other shell logged {meanwhile} lines meanwhile"


def _kernel_stamps(bed: Container, containing: str = "", after: float = -1.0) -> list[float]:
    """The stamps of the kernel log's records (those CONTAINING a text, after a stamp)."""
    stamps = []
    for line in bed.run(["dmesg"]).stdout.splitlines():
        stamp, _, text = line.partition("]")
        try:
            value = float(stamp.lstrip("[ "))
        except ValueError:
            continue
        if containing in text and value > after:
            stamps.append(value)
    return stamps


def test_failing_mount_is_reported_and_rolled_back(bed: Container) -> None:
    bed.sh(NO_ROOM_BELOW_DOC + """
        # A kernel line from just before the apply, which is not its reason.
        mkdir -p /tmp/m; ! mount -t overlay overlay -o lowerdir=/nonexistent-lower /tmp/m 2>/dev/null
    """ + SOURCE_TREE)
    before = snapshot(bed)
    # Another shell's failing mounts while this apply runs: their kernel
    # lines name their own paths, not this overlay's, and are not its reason.
    bed.sh("mkdir -p /tmp/n")
    with another_shell_mounting(bed, "mount -t overlay overlay -o lowerdir=/nonexistent-other /tmp/n",
                                "nonexistent-other"):
        result = bed.sdoverlay("apply", "deep", "/srv/src", "/usr/share/doc/dpkg")
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "usr-share-doc-dpkg.mount failed (exit-code): mount: /usr/share/doc/dpkg: wrong fs type" in result.stderr
    assert "overlayfs: maximum fs stacking depth exceeded" in result.stderr
    assert "nonexistent-lower" not in result.stderr
    assert "nonexistent-other" not in result.stderr
    assert "rollback incomplete" not in result.stderr
    assert snapshot(bed) == before
    assert overlay_units(bed) == []
    # The name is free again: nothing failed is left loaded.
    bed.sdoverlay("apply", "deep", "/srv/src", "/usr/share/man", check=True)


def test_copy_that_fails_is_rolled_back(bed: Container) -> None:
    # /proc/self/mem passes every check (a regular, readable file) but cannot
    # be read from offset 0: the copy fails after the area was created.
    before = snapshot(bed)
    result = bed.sdoverlay("apply", "badcopy", "/proc/self/mem", "/usr/share/doc")
    assert result.returncode == 1, result.stderr
    # SOURCE is resolved: /proc/self is the CLI's own pid.
    assert re.search(r"cannot copy /proc/\d+/mem: error reading /proc/\d+/mem: Input/output error$", result.stderr)
    assert result.stderr.count("\n") == 1
    assert snapshot(bed) == before
    assert overlay_units(bed) == []


def test_kernel_lines_are_no_reason_for_a_copy_that_fails(bed: Container) -> None:
    # An overlayfs line logged just before (here by a hand-made mount that
    # fails) must not be attached to the next failure, which is a copy's.
    # Reproduces a CI failure: explain() took overlayfs lines stamped up to
    # 1 s before the operation started.
    bed.sh("mkdir -p /tmp/m; mount -t overlay overlay -o lowerdir=/nonexistent-lower /tmp/m 2>/dev/null && exit 1; "
           "dmesg | grep -q 'overlayfs: failed to resolve .*/nonexistent-lower'")
    # Nor a line logged meanwhile that names no path: another shell stacks
    # a third overlay by hand, in a loop, where overlayfs allows two.
    bed.sh("""
        mkdir -p /tmp/s0 /tmp/s1/u /tmp/s1/w /tmp/s1/m /tmp/s2/u /tmp/s2/w /tmp/s2/m /tmp/s3/u /tmp/s3/w /tmp/s3/m
        mount -t overlay overlay -o lowerdir=/tmp/s0,upperdir=/tmp/s1/u,workdir=/tmp/s1/w /tmp/s1/m
        mount -t overlay overlay -o lowerdir=/tmp/s1/m,upperdir=/tmp/s2/u,workdir=/tmp/s2/w /tmp/s2/m
    """)
    with another_shell_mounting(bed, "mount -t overlay overlay -o lowerdir=/tmp/s2/m,upperdir=/tmp/s3/u,workdir=/tmp/s3/w "
                                "/tmp/s3/m", "stacking depth exceeded"):
        result = bed.sdoverlay("apply", "badcopy", "/proc/self/mem", "/usr/share/doc")
    assert result.returncode == 1, result.stderr
    assert "overlay" not in result.stderr.split("failed (", 1)[-1], result.stderr
    assert re.search(r"Input/output error$", result.stderr), result.stderr


def test_units_needing_the_target_are_stopped_first(bed: Container) -> None:
    bed.sh(SOURCE_TREE)
    bed.sdoverlay("apply", "needed", "/srv/src", "/usr/share/doc", check=True)
    # WorkingDirectory= implies RequiresMountsFor=: systemd stops the user first.
    bed.run(["systemd-run", "--unit=user-of-doc", "--property=WorkingDirectory=/usr/share/doc", "sleep", "600"])
    bed.sdoverlay("remove", "needed", check=True)
    assert bed.run(["systemctl", "is-active", "user-of-doc"], check=False).stdout.strip() == "inactive"
    assert_gone(bed, "needed", "/usr/share/doc")


def test_busy_target_is_reported_and_overlay_kept(bed: Container) -> None:
    bed.sh(SOURCE_TREE)
    bed.sdoverlay("apply", "busy", "/srv/src", "/usr/share/doc", check=True)
    # A process systemd knows no dependency for keeps the mount busy.
    bed.run(["systemd-run", "--unit=holder", "sh", "-c", "cd /usr/share/doc && exec sleep 600"])
    bed.run(["sh", "-c", "for i in $(seq 50); do [ \"$(readlink /proc/$(systemctl show -P MainPID holder)/cwd)\" = /usr/share/doc ] && exit 0; sleep 0.1; done; exit 1"])
    result = bed.sdoverlay("remove", "busy")
    assert result.returncode == 1, result.stderr
    assert "cannot remove overlay 'busy'" in result.stderr
    assert "target is busy" in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1
    # Still usable and still listed, not half torn down.
    assert bed.run(["cat", "/usr/share/doc/top.txt"]).stdout == "applied\n"
    assert listed(bed)["busy"]["state"] == "active"
    # A reset refused the same way keeps what was written, and no hold unit.
    bed.sh("echo kept > /usr/share/doc/written.txt")
    result = bed.sdoverlay("reset", "busy")
    assert result.returncode == 1, result.stderr
    assert "cannot reset overlay 'busy'" in result.stderr and "target is busy" in result.stderr
    assert result.stderr.count("\n") == 1
    assert bed.run(["cat", "/usr/share/doc/written.txt"]).stdout == "kept\n"
    assert overlay_units(bed) == ["run-usroverlay-busy.mount", "usroverlay-busy-content.service"]
    bed.run(["systemctl", "stop", "holder"])
    bed.sdoverlay("reset", "busy", check=True)
    assert bed.run(["test", "-e", "/usr/share/doc/written.txt"], check=False).returncode != 0
    bed.sdoverlay("remove", "busy", check=True)
    assert_gone(bed, "busy", "/usr/share/doc")


@pytest.mark.parametrize("command", ["apply", "unlock", "list", "status", "diff", "export", "reset", "remove", "persist", "log", "gc"])
def test_help_on_every_command(bed: Container, command: str) -> None:
    result = bed.sdoverlay(command, "--help", check=True)
    assert "Exit codes: 0 success" in result.stdout


def test_status_shows_one_overlay_whole(bed: Container) -> None:
    """Issue 10, its first part: `status NAME` in the manner of systemctl status."""
    bed.sh(SOURCE_TREE)
    bed.sdoverlay("apply", "shown", "/srv/src", "/usr/share/doc", check=True)
    bed.sh("echo new > /usr/share/doc/new.txt; rm /usr/share/doc/top.txt; mkdir /usr/share/doc/newdir")
    bed.sh("cd /usr/share/doc && exec sleep 60 >/dev/null 2>&1 &")
    found = json.loads(bed.sdoverlay("status", "shown", "--json", check=True).stdout)
    assert found["name"] == "shown" and found["state"] == "active" and found["source"] == "/srv/src"
    assert [(unit["unit"], unit["active"]) for unit in found["unit_states"]] == [
        ("run-usroverlay-shown.mount", "active"), ("usroverlay-shown-content.service", "active"),
        ("usr-share-doc.mount", "active")]
    # Written: new.txt, the whiteout of top.txt, newdir.
    assert found["changed_paths"] == 3
    assert found["content_bytes"] > 0 and found["written_bytes"] > 0
    assert found["area_used_bytes"] >= found["content_bytes"] and found["size_limit_bytes"] > 0
    assert "sleep" in [user["command"] for user in found["used_by"]]
    assert [event["event"] for event in found["events"]][-1] == "applied"
    text = bed.sdoverlay("status", "shown", check=True).stdout
    assert text.startswith("shown - overlay on /usr/share/doc\n")
    assert "    State: active" in text and "Changed: 3 path(s)" in text and "usr-share-doc.mount active" in text
    # What the caller may not read is null; someone else's processes are not shown.
    other = json.loads(bed.sdoverlay("status", "shown", "--json", user=NOBODY, check=True).stdout)
    assert other["changed_paths"] is None and other["written_bytes"] is None and other["used_by"] == []
    bed.sh("pkill -x sleep || true")
    missing = bed.sdoverlay("status", "nothere")
    assert missing.returncode == 3 and missing.stderr == "sdoverlay: no overlay named 'nothere'\n"
    bed.sdoverlay("remove", "shown", check=True)
