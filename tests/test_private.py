"""Private overlays and `sdoverlay run` (issue 10) on a real systemd:
writable for the command run in them, read-only for every other process."""

from __future__ import annotations

import json
import time

from tests.test_users import ALICE, USERS, as_user
from tests.test_robust import nothing_left
from tests.testbed import NOBODY, Container

DOC = "/usr/share/doc"


def run_units(bed: Container) -> list[str]:
    out = bed.run(["systemctl", "list-units", "--all", "--plain", "--no-legend", "sdoverlay-run-*"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def test_run_writes_through_a_private_overlay_while_every_other_process_gets_erofs(bed: Container) -> None:
    # A service with a mount namespace of its own, made before the overlay:
    # it receives the overlay by propagation, and must receive it read-only.
    bed.run(["systemd-run", "--unit", "early", "-p", "PrivateTmp=yes", "sleep", "600"])
    status = json.loads(bed.sdoverlay("unlock", DOC, "--name", "pkg", "--private", "--json", check=True).stdout)
    assert status["private"] is True and status["state"] == "active"

    outside = bed.sh(f"touch {DOC}/outside", check=False)
    assert outside.returncode != 0 and "Read-only file system" in outside.stderr

    result = bed.sh(f"cd /usr/share && {bed.sdoverlay_path} run pkg -- sh -c "
                    f"'echo written > {DOC}/new.txt && pwd && id -u && echo to-stderr >&2; exit 7'", check=False)
    assert result.returncode == 7  # COMMAND's own exit status
    assert result.stdout == "/usr/share\n0\n" and result.stderr == "to-stderr\n"

    assert bed.sh(f"cat {DOC}/new.txt").stdout == "written\n"  # everyone sees what it wrote ...
    for writer in (f"touch {DOC}/new.txt",  # ... and nobody else may write
                   f"nsenter -t $(systemctl show -P MainPID early) -m touch {DOC}/from-early",
                   f"systemd-run --pipe --wait -q -p ProtectSystem=full touch {DOC}/from-service"):
        attempt = bed.sh(writer, check=False)
        assert attempt.returncode != 0 and "Read-only file system" in attempt.stderr, (writer, attempt)
    assert bed.sdoverlay("diff", "pkg", check=True).stdout == f"A {DOC}/new.txt\n"
    events = [(entry["event"], entry["result"]) for entry in
              json.loads(bed.sdoverlay("log", "pkg", "--json", check=True).stdout)]
    assert ("run", f"sh -c echo written > {DOC}/new.txt && pwd && id -u && echo to-stderr >&2; exit 7") in events

    # Ctrl-C at the CLI reaches the command (in its unit, it has no terminal of its own).
    interrupted = bed.sh(f"{bed.sdoverlay_path} run pkg -- sleep 60 & sleep 1.5; kill -INT $!; wait $!", check=False)
    assert interrupted.returncode == 128 + 2
    assert run_units(bed) == [] and bed.sh("ls -A /run/sdoverlay-run").stdout == ""

    # reset empties it, and it is private again once remounted.
    bed.sdoverlay("reset", "pkg", check=True)
    assert bed.sh(f"ls {DOC}/new.txt 2>/dev/null || echo gone").stdout == "gone\n"
    assert bed.sh(f"touch {DOC}/again", check=False).returncode != 0
    bed.run(["systemctl", "stop", "early"])
    bed.sdoverlay("remove", "pkg", check=True)
    nothing_left(bed)


def test_run_refusals_are_one_line_and_leave_nothing(bed: Container) -> None:
    bed.sdoverlay("unlock", DOC, "--name", "mine", "--private", check=True)
    bed.sdoverlay("unlock", "/usr/share/man", "--name", "open", check=True)
    cases = [
        (["run", "nothere", "--", "true"], 3, "sdoverlay: no overlay named 'nothere'\n"),
        (["run", "open", "--", "true"], 2,
         "sdoverlay: overlay 'open' is not private (--private): every process may write to it already\n"),
        (["run", "mine"], 2, None),
        (["run", "mine", "--", "/nonexistent"], 127, "sdoverlay run: cannot run /nonexistent: No such file or directory\n"),
        (["unlock", "/usr/share/info", "--private", "--hotfix", "--name", "x"], None, None),
        (["apply", "ro", "/etc", "/usr/share/info", "--private", "--read-only"], 2,
         "sdoverlay: --private and --read-only exclude each other: a private overlay is writable for "
         "'sdoverlay run' and read-only for everyone else\n"),
    ]
    for args, code, message in cases:
        result = bed.sdoverlay(*args)
        if code is not None:
            assert result.returncode == code, (args, result.stderr)
        if message is not None:
            assert result.stderr == message, (args, result.stderr)
        assert result.stderr.count("\n") == 1, (args, result.stderr)
    bed.sdoverlay("remove", "x")
    other = bed.sdoverlay("run", "mine", "--no-ask-password", "--", "true", user=NOBODY)
    assert other.returncode == 5 and "belongs to uid 0, not 65534" in other.stderr
    assert run_units(bed) == [] and bed.sh("ls -A /run/sdoverlay-run 2>/dev/null || true").stdout == ""
    for name in ("mine", "open"):
        bed.sdoverlay("remove", name, check=True)
    nothing_left(bed)


def test_a_user_runs_in_their_own_private_overlay_as_themselves(bed: Container) -> None:
    """COMMAND runs as the caller: the overlay is writable in its namespace,
    and file permissions apply there as anywhere (alice may not write to
    root's dirs: EACCES, not EROFS)."""
    bed.sh(USERS)
    created = as_user(bed, ALICE, "unlock", "/usr/share/man", "--name", "alices", "--private")
    assert created.returncode == 0, created.stderr
    result = as_user(bed, ALICE, "run", "alices", "--", "sh", "-c", "id -u; id -G; touch /usr/share/man/alice.txt")
    assert result.returncode == 1
    assert result.stdout.splitlines()[0] == str(ALICE) and "990" in result.stdout.splitlines()[1].split()
    assert "Permission denied" in result.stderr
    outside = as_user(bed, ALICE, "run", "alices", "--", "touch", "/usr/share/doc/elsewhere")
    assert outside.returncode == 1 and "Read-only file system" in outside.stderr  # only the overlay is writable
    for who in (f"setpriv --reuid={ALICE} --regid={ALICE} --init-groups", ""):
        denied = bed.sh(f"{who} touch /usr/share/man/alice.txt", check=False)
        assert denied.returncode != 0 and "Read-only file system" in denied.stderr, (who, denied)
    assert as_user(bed, ALICE, "remove", "alices").returncode == 0
    nothing_left(bed)


def test_a_private_overlay_survives_reload_and_reexec_and_a_killed_run_leaves_nothing(bed: Container) -> None:
    bed.sdoverlay("unlock", DOC, "--name", "kept", "--private", check=True)
    for command in ("daemon-reload", "daemon-reexec"):
        bed.run(["systemctl", command])
        listed = json.loads(bed.sdoverlay("status", "kept", "--json", check=True).stdout)
        assert listed["state"] == "active" and listed["private"] is True, (command, listed["state"])
        denied = bed.sh(f"touch {DOC}/after-{command}", check=False)
        assert "Read-only file system" in denied.stderr, command
        bed.sdoverlay("run", "kept", "--", "touch", f"{DOC}/run-after-{command}", check=True)
    # The CLI killed half-way: its command is stopped with it (test_edges),
    # its unit and request go.
    bed.sh(f"{bed.sdoverlay_path} run kept -- sh -c 'sleep 2; touch {DOC}/finished' & sleep 1; kill -9 $!")
    bed.sh("for i in $(seq 30); do systemctl list-units --all --plain --no-legend 'sdoverlay-run-*' | grep -q . "
           "|| exit 0; sleep 0.1; done; exit 1")
    time.sleep(1.5)
    assert bed.run(["test", "-e", f"{DOC}/finished"], check=False).returncode == 1
    assert run_units(bed) == [] and bed.sh("ls -A /run/sdoverlay-run").stdout == ""
    bed.sdoverlay("remove", "kept", check=True)
    nothing_left(bed)
