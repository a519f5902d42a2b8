"""What a careful administrator and a hostile member of the allowed group
find at the edges, on the real test bed: sizes that wrap, values written
into files, detached overlays and runs that nobody sees, a run outliving
its CLI, and errors that must name their real cause. Every refusal is one
line with its exit code and leaves nothing behind."""

from __future__ import annotations

import json

import pytest

from tests.test_boot import INSTALL_GENERATOR
from tests.test_overlays import listed
from tests.test_private import run_units
from tests.test_robust import _hold_busy, nothing_left
from tests.test_users import ALICE, BOB, USERS, as_user, nothing_of_ours
from tests.testbed import Container

DOC = "/usr/share/doc"


@pytest.fixture
def bed(each_bed: Container) -> Container:
    return each_bed


def install_generator(bed: Container) -> None:
    """The generator, where the bed's /usr lacks it (the image has it installed)."""
    if bed.root == "/":
        bed.sh(INSTALL_GENERATOR)


def refused(result, code: int, text: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert result.stderr.count("\n") == 1 and text in result.stderr, result.stderr


# --size ---------------------------------------------------------------------

# 2^64 wraps to 0 in tmpfs' size= (no limit), 2^64 + 3000 to a page, and
# the last to its value mod 2^64; 1000G is more than this machine has.
HUGE_SIZES = ["18446744073709551616", "18446744073709555000", "99999999999999999999999", "17179869184G", "1000G"]


def test_a_size_tmpfs_cannot_hold_or_the_machine_does_not_have_is_refused_everywhere(bed: Container) -> None:
    bed.sh(USERS)
    before = nothing_of_ours(bed)
    for size in HUGE_SIZES:
        for who in (ALICE, 0):
            refused(as_user(bed, who, "unlock", DOC, "--size", size), 2, f"invalid size {size!r}")
        bed.sh(f"printf '[Overlay]\\nName=big\\nTarget={DOC}\\nSize={size}\\n' > /tmp/batch.conf")
        refused(bed.sdoverlay("apply", "--from", "/tmp/batch.conf"), 2, f"invalid size {size!r}")
        # The service itself, called without the CLI's checks.
        called = bed.run(["busctl", "call", "org.sdoverlay.Overlays1", "/org/sdoverlay/Overlays1",
                          "org.sdoverlay.Overlays1", "Unlock", "ssa{sv}", DOC, "big", "1", "size", "s", size],
                         check=False)
        assert called.returncode != 0 and f"invalid size '{size}'" in called.stderr, called.stderr
    assert nothing_of_ours(bed) == before
    # A drop-in at boot: the generator skips it and says why.
    install_generator(bed)
    bed.sh(f"mkdir -p /etc/sdoverlay.d && printf '[Overlay]\\nTarget={DOC}\\n"
           "Size=18446744073709551616\\n' > /etc/sdoverlay.d/big.conf")
    bed.run(["systemctl", "daemon-reload"])
    assert listed(bed) == {}
    logged = bed.run(["journalctl", "-b", "-o", "cat", "SYSLOG_IDENTIFIER=sdoverlay-generator"]).stdout
    assert "invalid size '18446744073709551616'" in logged, logged
    # The largest size that fits is taken.
    assert bed.sdoverlay("unlock", DOC, "--size", "100%").returncode == 0


# export --version -----------------------------------------------------------

@pytest.mark.parametrize("version", ["1\nID=evil", "../x", "1.0 beta", "", "1/2", "UPPER", "."])
def test_export_refuses_a_version_os_release_would_not_take(bed: Container, version: str) -> None:
    bed.sdoverlay("unlock", DOC, check=True)
    bed.sh(f"echo new > {DOC}/new.txt")
    result = bed.sdoverlay("export", "usr-share-doc", "/tmp/v1", "--version", version)
    refused(result, 2, "invalid --version")
    assert bed.run(["test", "-e", "/tmp/v1"], check=False).returncode == 1
    refused(bed.sdoverlay("export", "usr-share-doc", "/tmp/v2", "--version", "1.2~x"), 2, "invalid --version")
    bed.sdoverlay("export", "usr-share-doc", "/tmp/v2", "--version", "1.2_rc-3", check=True)
    release = bed.run(["cat", "/tmp/v2/usr/lib/extension-release.d/extension-release.v2"]).stdout
    assert "SYSEXT_VERSION_ID=1.2_rc-3\n" in release


def test_a_run_cannot_write_lines_into_its_unit_file(bed: Container) -> None:
    """A member's COMMAND is in the run unit's Description=: a newline in it
    must not become a [Service] line that root runs at the next reload."""
    bed.sh(USERS)
    assert as_user(bed, ALICE, "unlock", "/usr/share/man", "--private", "--name", "m").returncode == 0
    injected = "x\n[Service]\nExecStopPost=/bin/touch /tmp/pwned"
    line = (f"setpriv --reuid={ALICE} --regid={ALICE} --init-groups {bed.sdoverlay_path} run m -- sh -c 'sleep 3'"
            f" '{injected}' & sleep 1.5; systemctl daemon-reload; systemctl show -P Description 'sdoverlay-run-m-*';"
            " wait")
    shown = bed.run(["sh", "-c", line])
    assert shown.stdout == "sdoverlay run in overlay m: sh -c sleep 3 x\\n[Service]\\nExecStopPost=/bin/touch /tmp/pwned\n"
    assert bed.run(["test", "-e", "/tmp/pwned"], check=False).returncode == 1
    assert as_user(bed, ALICE, "remove", "m").returncode == 0


# Detached overlays ----------------------------------------------------------

def test_a_detached_overlay_blocks_neither_its_target_nor_its_name_and_every_verb_says_so(bed: Container) -> None:
    bed.sdoverlay("unlock", "/usr", check=True)
    pid = _hold_busy(bed, "/usr/share")
    removed = bed.sdoverlay("remove", "usr")
    assert removed.returncode == 0 and "detached lazily" in removed.stdout, removed.stderr
    status = json.loads(bed.sdoverlay("status", "usr", "--json", check=True).stdout)
    assert status["state"] == "detached"
    assert {"pid": pid, "command": "sleep"} in [{k: u[k] for k in ("pid", "command")} for u in status["used_by"]]
    assert f"{pid} (sleep)" in bed.sdoverlay("status", "usr", check=True).stdout
    # Every verb on it: one line, its state, what to do.
    for verb in (["remove", "usr"], ["reset", "usr"], ["persist", "usr"], ["diff", "usr"]):
        refused(bed.sdoverlay(*verb), 4, f"overlay 'usr' is detached from /usr: still used by {pid} (sleep)")
    explicit = bed.sdoverlay("unlock", "/usr", "--name", "usr")
    refused(explicit, 4, "overlay 'usr' is detached from /usr")
    assert "choose another --name" in explicit.stderr
    # Its target and what lies under it are free again; a derived name that
    # a detached overlay holds gets a suffix.
    man = json.loads(bed.sdoverlay("unlock", "/usr/share/man", "--json", check=True).stdout)
    assert man["state"] == "active"
    bed.sdoverlay("remove", "usr-share-man", check=True)
    again = json.loads(bed.sdoverlay("unlock", "--json", check=True).stdout)
    assert (again["name"], again["target"], again["state"]) == ("usr-2", "/usr", "active")
    bed.sh("echo fresh > /usr/share/fresh.txt")
    assert bed.sdoverlay("reset", "usr-2").returncode == 0
    assert bed.sdoverlay("remove", "usr-2").returncode == 0
    bed.sh(f"kill {pid}")
    bed.sh("for i in $(seq 100); do [ -z \"$(ls -A /run/usroverlay)\" ] && exit 0; sleep 0.1; done; exit 1")
    nothing_left(bed)


# Runs -----------------------------------------------------------------------

def test_a_running_run_holds_its_overlay(bed: Container) -> None:
    bed.sdoverlay("unlock", DOC, "--private", "--name", "p", check=True)
    bed.sh(f"{bed.sdoverlay_path} run p -- sh -c 'sleep 3; echo late > {DOC}/late' >/dev/null 2>&1 & "
           "for i in $(seq 50); do systemctl is-active -q 'sdoverlay-run-p-*' && exit 0; sleep 0.1; done; exit 1")
    (unit,) = run_units(bed)
    status = json.loads(bed.sdoverlay("status", "p", "--json", check=True).stdout)
    assert [user["unit"] for user in status["used_by"]] == [unit], status["used_by"]
    assert "sdoverlay run" in bed.sdoverlay("status", "p", check=True).stdout
    for verb in ("remove", "reset"):
        refused(bed.sdoverlay(verb, "p"), 4, f"overlay 'p' is in use by {unit} (sdoverlay run: sh -c sleep 3")
    assert listed(bed)["p"]["state"] == "active"
    bed.sh(f"for i in $(seq 60); do test -e {DOC}/late && exit 0; sleep 0.1; done; exit 1")
    bed.sh("for i in $(seq 30); do systemctl list-units --all --plain --no-legend 'sdoverlay-run-*' | grep -q . "
           "|| exit 0; sleep 0.1; done; exit 1")
    bed.sdoverlay("remove", "p", check=True)
    nothing_left(bed)


def test_a_run_ends_with_its_killed_cli(bed: Container) -> None:
    bed.sh(USERS)
    for who, name in ((0, "ak"), (ALICE, "alices")):
        target = DOC if who == 0 else "/usr/share/man"
        created = as_user(bed, who, "unlock", target, "--private", "--name", name)
        assert created.returncode == 0, created.stderr
        as_user(bed, who, "run", name, "--", "true", check=True)
        line = (f"sdoverlay run {name} -- sh -c 'sleep 20; touch {target}/after' & sleep 1.5; kill -9 $!;"
                f" for i in $(seq 50); do systemctl list-units --plain --no-legend 'sdoverlay-run-{name}-*'"
                " | grep -q . || exit 0; sleep 0.1; done; exit 1")
        bed.run(["sh", "-c", line], user=who, login_groups=True, env={"PATH": f"{bed.sdoverlay_path.rsplit('/', 1)[0]}:/usr/bin:/bin"})
        assert run_units(bed) == []
        assert bed.run(["test", "-e", f"{target}/after"], check=False).returncode == 1
        events = json.loads(bed.sdoverlay("log", name, "--json", check=True).stdout)
        assert [e["result"] for e in events if e["event"] == "stopped" and e["verb"] == "run"] == [
            "the caller's bus connection closed: its run was stopped"], events
        assert as_user(bed, who, "remove", name).returncode == 0
    nothing_left(bed)


# The real cause ---------------------------------------------------------------

def test_a_full_run_is_said_and_nothing_is_left(bed: Container) -> None:
    # /run made small, then filled: no need to fill gigabytes of memory.
    bed.sh("used=$(df --output=used -k /run | tail -1); mount -o remount,size=$((used + 256))k /run;"
           "avail=$(df --output=avail -B1 /run | tail -1); fallocate -l $((avail - 8192)) /run/fill")
    before = nothing_of_ours(bed)
    for args in (["unlock", "/usr/share/info"], ["apply", "x", "/etc", "/usr/share/info"]):
        refused(bed.sdoverlay(*args), 1, "No space left on device in /run")
    assert nothing_of_ours(bed) == before
    bed.run(["rm", "/run/fill"])
    bed.sdoverlay("unlock", "/usr/share/info", check=True)


def test_a_users_remove_of_a_missing_name_is_not_found(bed: Container) -> None:
    bed.sh(USERS)
    for who in (ALICE, BOB, 0):
        refused(as_user(bed, who, "remove", "nosuch"), 3, "no overlay named 'nosuch'")


def test_log_says_when_the_journal_is_not_readable_for_the_user(bed: Container) -> None:
    bed.sh(USERS)
    bed.sdoverlay("unlock", DOC, check=True)
    assert json.loads(bed.sdoverlay("log", "--json", check=True).stdout) != []
    refused(as_user(bed, BOB, "log"), 5, "the system journal is not readable for uid 1001")
    assert "systemd-journal" in as_user(bed, BOB, "log").stderr
    bed.sh("sed -i 's/^systemd-journal:x:[0-9]*:$/&bob/' /etc/group && grep -q '^systemd-journal:.*:bob$' /etc/group")
    shown = as_user(bed, BOB, "log", "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout) != [], shown.stderr


def test_under_sudo_source_is_read_as_root_and_unreadable_is_not_missing(bed: Container) -> None:
    bed.sh(USERS + "mkdir -p /root/src && echo secret > /root/src/root.txt && chmod 700 /root")
    # sudo: root's process, SUDO_UID names the owner only.
    result = bed.sdoverlay("apply", "mine", "/root/src", DOC, "--json", env={"SUDO_UID": str(ALICE)})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["owner_uid"] == ALICE
    assert bed.run(["cat", f"{DOC}/root.txt"]).stdout == "secret\n"
    assert as_user(bed, ALICE, "reset", "mine").returncode == 0  # the owner's, as before
    assert bed.run(["cat", f"{DOC}/root.txt"]).stdout == "secret\n"
    assert as_user(bed, ALICE, "remove", "mine").returncode == 0
    # The user's own request: what exists but they may not read is said so.
    before = nothing_of_ours(bed)
    refused(as_user(bed, ALICE, "apply", "theirs", "/root/src", DOC), 5, "source /root/src is not readable by uid 1000")
    refused(as_user(bed, ALICE, "apply", "theirs", "/home/alice/nothere", DOC), 3,
            "source /home/alice/nothere does not exist")
    assert nothing_of_ours(bed) == before


ROOT_EQUIVALENT = ["/usr/bin", "/usr/share/polkit-1/rules.d", "/usr/lib/systemd", "/usr/share/dbus-1",
                   "/usr/lib/x86_64-linux-gnu/security", "/usr/lib/python3", "/usr"]


def test_members_may_not_overlay_what_makes_them_root_by_default(bed: Container) -> None:
    bed.sh(USERS)
    before = nothing_of_ours(bed)
    for target in ROOT_EQUIVALENT:
        refused(as_user(bed, ALICE, "unlock", target), 5, "polkit action org.sdoverlay.create-outside-user-roots")
    assert nothing_of_ours(bed) == before
    for target in ("/usr/share/doc", "/usr/share/man", "/usr/share/info"):
        assert as_user(bed, ALICE, "unlock", target).returncode == 0
    assert bed.sdoverlay("unlock", "/usr/share/polkit-1").returncode == 0  # root may
    # An administrator widens it knowingly.
    bed.sh("mkdir -p /etc/sdoverlay && printf '[Overlays]\\nUserAllowedRoots=/usr/lib/python3\\n'"
           " > /etc/sdoverlay/sdoverlay.conf")
    assert as_user(bed, ALICE, "unlock", "/usr/lib/python3").returncode == 0
