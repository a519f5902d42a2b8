"""Issue 7 on the real test bed: reloads, racing callers, killed commands,
hostile drop-ins, gc, busy and lazy removal, odd path names, health,
non-root callers, PID 1 leaving the bus, systemd's own failure reasons."""

from __future__ import annotations

import json
import random
import shlex
import time

import pytest

from tests.test_boot import INSTALL_GENERATOR
from tests.test_overlays import area_entries, listed, overlay_mounts, overlay_units
from tests.testbed import NOBODY, REPO, SDOVERLAY, VENV, Container

SOURCE = "mkdir -p /srv/src && echo applied > /srv/src/applied.txt\n"
ALLOW_SRV = "mkdir -p /etc/sdoverlay && printf '[Overlays]\\nAllowedRoots=/usr /srv\\n' > /etc/sdoverlay/sdoverlay.conf\n"


def nothing_left(bed: Container) -> None:
    """No unit, mount, area dir, drop-in or state of sdoverlay's anywhere."""
    assert overlay_units(bed) == []
    assert overlay_mounts(bed) == []
    assert area_entries(bed) == []
    assert bed.sh("find /var/lib/sdoverlay /etc/sdoverlay.d -mindepth 1 2>/dev/null || true").stdout.split() == []
    assert bed.run(["findmnt", "-rn", "-t", "overlay"], check=False).stdout == ""


def states(bed: Container) -> dict[str, str]:
    return {name: entry["state"] for name, entry in listed(bed).items()}


# 1. daemon-reload and daemon-reexec -----------------------------------------


def test_reload_keeps_a_hotfix_below_usr_removable(bed: Container) -> None:
    """The issue's reproduction: the generator took the live overlay for a
    foreign mount point and wrote the service kind; the area was stopped."""
    bed.sh(INSTALL_GENERATOR)
    bed.sdoverlay("unlock", "--hotfix", "/usr/share/man", "--name", "h1", check=True)
    bed.sh("echo hot > /usr/share/man/hot.txt")
    bed.run(["systemctl", "daemon-reload"])
    entry = listed(bed)["h1"]
    assert (entry["state"], entry["kind"]) == ("active", "mount")
    assert bed.run(["cat", "/usr/share/man/hot.txt"]).stdout == "hot\n"
    result = bed.sdoverlay("remove", "h1")
    assert result.returncode == 0, result.stderr
    nothing_left(bed)


def test_reloads_and_reexec_keep_every_kind_of_overlay(bed: Container) -> None:
    bed.sh(INSTALL_GENERATOR + SOURCE + ALLOW_SRV + """
        mkdir -p /srv/t /srv/d /srv/p /etc/sdoverlay.d
        printf '[Overlay]\\nName=drop\\nTarget=/srv/d\\nSource=/srv/src\\n' > /etc/sdoverlay.d/drop.conf
    """)
    bed.run(["systemctl", "daemon-reload"])
    bed.run(["systemctl", "start", "srv-d.mount"])
    bed.sdoverlay("apply", "trans", "/srv/src", "/srv/t", check=True)
    bed.sdoverlay("apply", "pers", "/srv/src", "/srv/p", check=True)
    bed.sdoverlay("persist", "pers", check=True)
    bed.sdoverlay("unlock", "--hotfix", "/usr", "--name", "hot", check=True)  # on /usr itself: the service kind
    bed.sh("echo w > /usr/share/hot.txt; echo w > /srv/t/w.txt; echo w > /srv/p/w.txt; echo w > /srv/d/w.txt")
    expected = {"trans": "active", "drop": "active", "pers": "active", "hot": "active"}
    assert states(bed) == expected
    for command in (["daemon-reload"], ["daemon-reload"], ["daemon-reload"], ["daemon-reexec"]):
        bed.run(["systemctl", *command])
        assert states(bed) == expected, command
        for path in ("/usr/share/hot.txt", "/srv/t/w.txt", "/srv/p/w.txt", "/srv/d/w.txt"):
            assert bed.run(["cat", path]).stdout == "w\n", (command, path)
    # A remove reloads systemd too: the others must not notice.
    remaining = dict(expected)
    for name in ("drop", "trans", "pers"):
        result = bed.sdoverlay("remove", name)
        assert result.returncode == 0, (name, result.stderr)
        del remaining[name]
        assert states(bed) == remaining
    # PID 1 re-executed itself from the hotfixed /usr: it holds that overlay,
    # which is detached, named as such and tracked, not silently dropped.
    result = bed.sdoverlay("remove", "hot")
    assert result.returncode == 0 and "detached lazily: still used by 1 (systemd)" in result.stdout, result
    assert states(bed) == {"hot": "detached"}
    assert overlay_units(bed) == ["run-usroverlay-hot.mount", "usroverlay-hot-detached.service"]
    assert bed.run(["findmnt", "-rn", "-t", "overlay"], check=False).stdout == ""
    assert bed.sh("find /var/lib/sdoverlay /etc/sdoverlay.d -mindepth 1").stdout == ""


# 2. hostile drop-ins ---------------------------------------------------------


def test_hostile_dropins_are_skipped_and_the_good_one_comes_up(bed: Container) -> None:
    bed.sh(INSTALL_GENERATOR + SOURCE + """
        mkdir -p /etc/sdoverlay.d && cd /etc/sdoverlay.d
        mkfifo a-fifo.conf
        ln -s /dev/zero b-zero.conf
        mkdir c-dir.conf
        ln -s /nonexistent d-dangling.conf
        head -c 200000 /dev/zero | tr '\\0' '#' > e-huge.conf
        printf '[Overlay]\\nTarget=/usr/share/man\\n\\377\\376\\n' > f-badutf8.conf
        printf '[Overlay]\\nName=good\\nTarget=/usr/share/doc\\nSource=/srv/src\\n' > z-good.conf
    """)
    started = time.monotonic()
    bed.run(["timeout", "10", "systemctl", "daemon-reload"])
    assert time.monotonic() - started < 2.0
    bed.run(["systemctl", "start", "usr-share-doc.mount"])
    assert bed.run(["cat", "/usr/share/doc/applied.txt"]).stdout == "applied\n"
    assert list(listed(bed)) == ["good"]
    log = bed.run(["journalctl", "-b", "-o", "cat", "SYSLOG_IDENTIFIER=sdoverlay-generator"]).stdout
    for name, why in (("a-fifo", "not a regular file (a FIFO)"), ("b-zero", "not a regular file (a character device)"),
                      ("c-dir", "not a regular file (a directory)"), ("d-dangling", "No such file or directory"),
                      ("e-huge", "larger than 65536 bytes"), ("f-badutf8", "can't decode")):
        assert f"/etc/sdoverlay.d/{name}.conf: " in log and why in log, (name, log)
    bed.sdoverlay("remove", "good", check=True)


def test_the_generators_journal_entries_arrive_whole_without_python_systemd(bed: Container) -> None:
    """The installed generator runs without `site`, so it writes to journald
    with its own datagram (sdoverlay.generator.journal_datagram), not
    python-systemd: a message with a newline (a drop-in's file name may have
    one) and non-ASCII text arrive as sent."""
    message = "/etc/sdoverlay.d/two\nlines.conf: Target= is not absolute; skipped \u00e9"
    code = (f"import sys; sys.path.append({str(REPO)!r}); from sdoverlay.generator import send_to_journal; "
            f"send_to_journal({{'MESSAGE': {message!r}, 'PRIORITY': '3', 'SYSLOG_IDENTIFIER': 'sdoverlay-journal-test'}}); "
            "assert 'systemd' not in sys.modules")
    bed.run(["/usr/bin/python3", "-I", "-S", "-c", code])
    for _ in range(50):
        entries = bed.run(["journalctl", "-b", "-o", "json", "SYSLOG_IDENTIFIER=sdoverlay-journal-test"]).stdout.splitlines()
        if entries:
            break
        time.sleep(0.1)
    (entry,) = [json.loads(line) for line in entries]
    assert (entry["MESSAGE"], entry["PRIORITY"]) == (message, "3"), entry


# 3. racing callers -----------------------------------------------------------


def test_racing_overlapping_creates_have_exactly_one_winner(bed: Container) -> None:
    bed.sh(INSTALL_GENERATOR + SOURCE)
    racers = [
        ("p", [SDOVERLAY, "apply", "p", "/srv/src", "/usr/share"]),
        ("c", [SDOVERLAY, "apply", "c", "/srv/src", "/usr/share/doc"]),
        ("h", [SDOVERLAY, "unlock", "--hotfix", "/usr/share/doc", "--name", "h"]),
    ]
    winners = []
    for round_number in range(10):
        chosen = racers if round_number % 2 else racers[:2]
        # Each round starts them in another order: with the service answering
        # in the order calls arrive, the first one started mostly wins.
        turn = round_number // 2 % len(chosen)
        chosen = chosen[turn:] + chosen[:turn]
        script = "set +e\n" + "".join(f"{shlex.join(argv)} >/tmp/{name}.out 2>&1 & pid_{name}=$!\n" for name, argv in chosen)
        script += "".join(f"wait $pid_{name}; echo {name}=$?\n" for name, _ in chosen)
        codes = dict(line.split("=") for line in bed.sh(script).stdout.split())
        won = [name for name, code in codes.items() if code == "0"]
        assert len(won) == 1, (round_number, codes)
        for name, code in codes.items():
            if name not in won:
                assert code == "4", (round_number, name, code)
                message = bed.run(["cat", f"/tmp/{name}.out"]).stdout
                assert message.count("\n") == 1 and "overlaps" in message, message
        assert list(listed(bed)) == won
        bed.sdoverlay("remove", won[0], check=True)
        nothing_left(bed)
        winners += won
    assert len(set(winners)) > 1  # a real race: not always the same one


def test_a_dropin_overlay_counts_for_conflicts(bed: Container) -> None:
    bed.sh(INSTALL_GENERATOR + SOURCE + """
        mkdir -p /etc/sdoverlay.d
        printf '[Overlay]\\nName=vendor\\nTarget=/usr/share/info\\n' > /etc/sdoverlay.d/vendor.conf
    """)
    bed.run(["systemctl", "daemon-reload"])
    result = bed.sdoverlay("apply", "x", "/srv/src", "/usr/share/info")
    assert result.returncode == 4 and "overlay 'vendor'" in result.stderr, result.stderr


# 4. killed commands and gc ---------------------------------------------------


KILL_SERVICE = "pid=$(systemctl show -P MainPID sdoverlay.service); [ \"$pid\" != 0 ] && kill -9 $pid || true"


def _kill_after(bed: Container, delay: float, *args: str) -> None:
    """kill -9 the service doing an sdoverlay command after DELAY seconds,
    then let systemd finish the jobs it had been asked for (as the next
    command would find them). The service does the work: killing only the
    CLI changes nothing (it goes on and finishes)."""
    bed.sh(f"{shlex.join([SDOVERLAY, *args])} >/dev/null 2>&1 & cli=$!; sleep {delay:.3f}; {KILL_SERVICE}; "
           "wait $cli || true")
    bed.sh("for i in $(seq 100); do [ -z \"$(systemctl list-jobs --no-legend)\" ] && exit 0; sleep 0.05; done; exit 1")


def _gc_then_nothing_left(bed: Container) -> None:
    result = bed.sdoverlay("gc", "--json")
    assert result.returncode == 0, result.stderr
    nothing_left(bed)


@pytest.mark.parametrize("verb", ["apply", "reset", "remove", "persist"])
def test_kill_9_at_random_points_then_the_next_command_works(bed: Container, verb: str) -> None:
    bed.sh(INSTALL_GENERATOR + SOURCE)
    rng = random.Random(f"issue-7-{verb}")
    apply = ["apply", "k", "/srv/src", "/usr/share/doc"]
    for _round in range(10):
        delay = rng.uniform(0.0, 0.6)
        if verb == "apply":
            _kill_after(bed, delay, *apply)
            result = bed.sdoverlay("remove", "k")
            assert result.returncode in (0, 3), (delay, result.stderr)
        else:
            bed.sdoverlay(*apply, check=True)
            bed.sh("echo w > /usr/share/doc/w.txt")
            _kill_after(bed, delay, verb, "k")
            if verb == "reset":
                result = bed.sdoverlay("reset", "k")
                assert result.returncode == 0, (delay, result.stderr)
                assert listed(bed)["k"]["state"] == "active"
                assert bed.run(["test", "-e", "/usr/share/doc/w.txt"], check=False).returncode == 1
            elif verb == "persist":
                result = bed.sdoverlay("persist", "k", "--json")
                assert result.returncode == 0, (delay, result.stderr)
                entry = json.loads(result.stdout)
                assert (entry["state"], entry["persistent"]) == ("active", True), delay
                assert bed.run(["cat", "/usr/share/doc/w.txt"]).stdout == "w\n", delay
            result = bed.sdoverlay("remove", "k")
            assert result.returncode in ((0, 3) if verb == "remove" else (0,)), (delay, result.stderr)
        assert "k" not in listed(bed), delay
        # The name is free again: the next apply works.
        bed.sdoverlay(*apply, check=True)
        bed.sdoverlay("remove", "k", check=True)
        _gc_then_nothing_left(bed)


def test_ctrl_c_leaves_either_a_whole_overlay_or_nothing(bed: Container) -> None:
    """SIGINT to the CLI stops its waiting, not the request: the service
    finishes it or rolls it back, and the CLI says so."""
    bed.sh(SOURCE)
    rng = random.Random("issue-7-sigint")
    for _round in range(10):
        delay = rng.uniform(0.05, 0.5)
        out = bed.sh(f"{SDOVERLAY} apply i /srv/src /usr/share/doc >/tmp/i.out 2>&1 & pid=$!; sleep {delay:.3f}; "
                     "kill -INT $pid 2>/dev/null || true; wait $pid; echo rc=$?", check=False).stdout
        code = int(out.split("rc=")[1])
        message = bed.run(["cat", "/tmp/i.out"]).stdout
        if code == 130:  # SIGINT before Python's own handler: the request was never sent
            assert message == "", message
        elif code != 0:
            assert code == 1 and message.count("\n") == 1, (delay, code, message)
            assert "interrupted: the service goes on" in message or message == "sdoverlay: aborted\n", message
        bed.run(["flock", "/run/sdoverlay/lock", "true"])  # the service is done with it
        entries = listed(bed)
        assert entries == {} or entries["i"]["state"] == "active", (delay, entries)
        if entries:
            bed.sdoverlay("remove", "i", check=True)
        nothing_left(bed)


def test_gc_removes_debris_and_never_a_live_overlay(bed: Container) -> None:
    bed.sh(SOURCE + """
        mkdir -p /run/usroverlay/stale /run/usroverlay/full /var/lib/sdoverlay/.gone.partial /var/lib/sdoverlay/orphan
        touch /run/usroverlay/full/file /var/lib/sdoverlay/orphan/writes
    """)
    bed.sdoverlay("apply", "live", "/srv/src", "/usr/share/doc", check=True)
    # A hold left by a killed reset, while the overlay is up.
    bed.run(["systemd-run", "--unit=usroverlay-live-hold.service", "-p", "BindsTo=run-usroverlay-live.mount",
             "-p", "RemainAfterExit=yes", "/usr/bin/true"])
    bed.run(["systemd-run", "--unit=usroverlay-ghost-content.service", "/usr/bin/false"], check=False)
    before = snapshot_of_live(bed)
    dry = json.loads(bed.sdoverlay("gc", "--dry-run", "--json", check=True).stdout)
    actions = {entry["what"]: entry["action"] for entry in dry}
    assert actions == {
        "usroverlay-live-hold.service": "would-remove",
        "usroverlay-ghost-content.service": "would-remove",
        "/run/usroverlay/stale": "would-remove",
        "/run/usroverlay/full": "kept",
        "/var/lib/sdoverlay/.gone.partial": "would-remove",
        "/var/lib/sdoverlay/orphan": "kept",
    }, dry
    assert bed.run(["test", "-d", "/run/usroverlay/stale"]).returncode == 0  # a dry run changes nothing
    text = bed.sdoverlay("gc", check=True).stdout
    assert "removed: /run/usroverlay/stale" in text and "left alone: /var/lib/sdoverlay/orphan" in text
    assert snapshot_of_live(bed) == before
    assert "usroverlay-live-hold.service" not in overlay_units(bed)
    assert area_entries(bed) == ["full", "live"]
    bed.sdoverlay("gc", "--remove-orphaned-state", check=True)
    assert bed.sh("ls -A /var/lib/sdoverlay").stdout.split() == []
    assert bed.sdoverlay("gc", "--json", check=True).stdout.count('"action": "removed"') == 0
    events = [e for e in json.loads(bed.sdoverlay("log", "--json", check=True).stdout) if e["event"] == "collected"]
    assert len(events) == 5


def snapshot_of_live(bed: Container) -> tuple:
    return (listed(bed)["live"]["state"], bed.run(["cat", "/usr/share/doc/applied.txt"]).stdout,
            [u for u in overlay_units(bed) if "hold" not in u and "ghost" not in u])


# 5. audit of what happens behind sdoverlay's back ------------------------------


def test_the_units_record_their_own_start_and_stop(bed: Container) -> None:
    bed.sh(SOURCE)
    # The service killed once systemd has its units: the overlay comes up
    # without anyone of sdoverlay's to record it.
    bed.sh(f"{SDOVERLAY} apply a /srv/src /usr/share/doc >/dev/null 2>&1 & cli=$!\n"
           "until systemctl list-units --all --no-legend run-usroverlay-a.mount | grep -q .; do sleep 0.005; done\n"
           f"{KILL_SERVICE}; wait $cli || true")
    bed.sh("for i in $(seq 50); do systemctl is-active -q usr-share-doc.mount && exit 0; sleep 0.1; done; exit 1")
    history = logged(bed, "a", 2)
    assert [entry["event"] for entry in history if entry["verb"] == "unit"] == ["started"]
    # The CLI saw its service go away, and says so: the only record not a unit's.
    assert [(entry["event"], entry["verb"]) for entry in history if entry["verb"] != "unit"] == [("failed", "apply")]
    bed.run(["systemctl", "stop", "usr-share-doc.mount"])  # behind sdoverlay's back
    bed.sh("for i in $(seq 50); do systemctl is-active -q usroverlay-a-content.service || exit 0; sleep 0.1; done; exit 1")
    events = [(entry["event"], entry["verb"], entry["target"]) for entry in logged(bed, "a", 3)]
    assert ("started", "unit", "/usr/share/doc") in events and ("stopped", "unit", "/usr/share/doc") in events, events
    # Its area, and so what was written, is kept: listed inactive until removed.
    entry = listed(bed)["a"]
    assert entry["state"] == "inactive" and entry["area_used_bytes"], entry
    assert "'sdoverlay remove a' frees it" in entry["problem"], entry
    bed.sdoverlay("remove", "a", check=True)
    nothing_left(bed)


def logged(bed: Container, name: str, count: int) -> list[dict]:
    """NAME's audit history once it has COUNT entries (journald writes a
    moment after the sender; 5 s at most)."""
    for _ in range(50):
        history = json.loads(bed.sdoverlay("log", name, "--json", check=True).stdout)
        if len(history) >= count:
            return history
        time.sleep(0.1)
    return history


# 6. busy and lazy ------------------------------------------------------------


def _hold_busy(bed: Container, directory: str) -> int:
    """A process systemd knows nothing of, with its cwd in DIRECTORY; its pid."""
    bed.sh(f"cd {directory} && setsid sleep 600 </dev/null >/dev/null 2>&1 & echo $! > /tmp/holder.pid")
    return int(bed.run(["cat", "/tmp/holder.pid"]).stdout)


def test_remove_of_a_busy_lazy_overlay_names_the_holders_and_tracks_the_memory(bed: Container) -> None:
    bed.sdoverlay("unlock", "/usr", check=True)
    bed.sh("head -c 50M /dev/urandom > /usr/share/blob")
    pid = _hold_busy(bed, "/usr/share")
    result = bed.sdoverlay("remove", "usr")
    assert result.returncode == 0, result.stderr
    assert f"{pid} (sleep)" in result.stdout and "stay allocated until they exit" in result.stdout
    assert "50." in result.stdout or "51." in result.stdout or "52." in result.stdout  # ~50M held
    entry = listed(bed)["usr"]
    assert entry["state"] == "detached" and entry["area_used_bytes"] >= 50 * 1024 * 1024, entry
    assert "processes still use the overlay" in entry["problem"]
    assert bed.run(["test", "-e", "/usr/share/blob"], check=False).returncode == 1  # gone from the namespace
    again = bed.sdoverlay("remove", "usr")
    assert again.returncode == 4 and f"overlay 'usr' is detached from /usr: still used by {pid} (sleep)" in again.stderr
    bed.run(["kill", str(pid)])
    bed.sh("for i in $(seq 100); do [ -z \"$(ls -A /run/usroverlay)\" ] && exit 0; sleep 0.1; done; exit 1")
    history = json.loads(bed.sdoverlay("log", "usr", "--json", check=True).stdout)
    assert [e["event"] for e in history if e["verb"] == "remove"] == ["removed", "detached", "refused"]
    nothing_left(bed)


def test_a_busy_unmount_names_the_processes(bed: Container) -> None:
    bed.sh(SOURCE)
    bed.sdoverlay("apply", "doc", "/srv/src", "/usr/share/doc", check=True)
    pid = _hold_busy(bed, "/usr/share/doc")
    result = bed.sdoverlay("remove", "doc")
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert f"processes using /usr/share/doc: {pid} (sleep)" in result.stderr, result.stderr
    assert listed(bed)["doc"]["state"] == "active"
    bed.run(["kill", str(pid)])
    bed.sdoverlay("remove", "doc", check=True)
    nothing_left(bed)


# 7. SOURCE and TARGET text ---------------------------------------------------

ODD_NAMES = ["with space", "quote\"d", "apos'trophe", "per%cent", "back\\slash", "dollar$HOME", "semi;colon", "ünïcödé"]


@pytest.mark.parametrize("odd", ODD_NAMES)
def test_odd_source_and_target_names(bed: Container, odd: str) -> None:
    source, target = f"/srv/src/{odd}", f"/srv/target/{odd}"
    bed.run(["mkdir", "-p", source, target])
    bed.run(["sh", "-c", 'echo odd > "$1/file.txt"', "-", source])
    bed.sh(ALLOW_SRV)
    result = bed.sdoverlay("apply", "odd", source, "/usr/share/doc")
    assert result.returncode == 0, result.stderr
    assert bed.run(["cat", "/usr/share/doc/file.txt"]).stdout == "odd\n"
    assert listed(bed)["odd"]["source"] == source
    bed.sdoverlay("remove", "odd", check=True)
    result = bed.sdoverlay("apply", "odd", "/srv/src/" + odd, target)
    if any(char in odd for char in " \"'%\\"):
        assert result.returncode == 2 and "cannot carry" in result.stderr, result.stderr
    else:
        assert result.returncode == 0, result.stderr
        assert bed.run(["cat", f"{target}/file.txt"]).stdout == "odd\n"
        bed.sdoverlay("remove", "odd", check=True)
    nothing_left(bed)


def test_source_dotdot_is_refused_and_a_dropin_source_with_a_space_works(bed: Container) -> None:
    bed.sh(INSTALL_GENERATOR + """
        mkdir -p '/srv/my src' /etc/sdoverlay.d && echo spaced > '/srv/my src/spaced.txt'
        printf '[Overlay]\\nName=sp\\nTarget=/usr/share/doc\\nSource=/srv/my src\\n' > /etc/sdoverlay.d/sp.conf
        printf '[Overlay]\\nName=up\\nTarget=/usr/share/man\\nSource=/srv/../etc\\n' > /etc/sdoverlay.d/up.conf
    """)
    result = bed.sdoverlay("apply", "up", "/srv/../etc", "/usr/share/man")
    assert result.returncode == 2 and "contains '..'" in result.stderr
    bed.run(["systemctl", "daemon-reload"])
    bed.run(["systemctl", "start", "usr-share-doc.mount"])
    assert bed.run(["cat", "/usr/share/doc/spaced.txt"]).stdout == "spaced\n"
    assert list(listed(bed)) == ["sp"]
    log = bed.run(["journalctl", "-b", "-o", "cat", "SYSLOG_IDENTIFIER=sdoverlay-generator"]).stdout
    assert "/etc/sdoverlay.d/up.conf: Source= '/srv/../etc' contains '..'" in log, log


# 8. no tracebacks --------------------------------------------------------------

NOBODY_COMMANDS = [
    (["apply", "x", "/srv/src", "/usr/share/doc"], 5),
    (["apply", "x", "/srv/src", "/usr/share/doc", "--read-only", "--keep-ownership", "--allow-setuid",
      "--allow-world-writable", "--size", "10M", "--json"], 5),
    (["unlock", "/usr/share/man"], 5),
    (["unlock", "--hotfix", "/usr/share/man", "--name", "h"], 5),
    (["unlock", "/usr/share/man", "--json", "--size", "5M"], 5),
    (["reset", "live"], 5),
    (["reset", "live", "--force", "--json"], 5),
    (["remove", "live"], 5),
    (["remove", "--force", "live", "--json"], 5),
    (["persist", "live"], 5),
    (["persist", "live", "--force", "--json"], 5),
    (["gc"], 5),
    (["gc", "--dry-run", "--json"], 5),
    (["gc", "--remove-orphaned-state"], 5),
    (["list"], 0),
    (["list", "--json", "--user", "0"], 0),
    # The system journal, where the service writes every event, is not
    # nobody's to read: said, not shown as empty (only reads: not audited).
    (["log"], 5),
    (["log", "live", "--json"], 5),
    (["--version"], 0),
    (["--help"], 0),
]


def test_every_verb_as_nobody_is_one_line_and_leaves_nothing(bed: Container) -> None:
    bed.sh(INSTALL_GENERATOR + SOURCE + "chmod -R a+rX /srv")
    bed.sdoverlay("apply", "live", "/srv/src", "/usr/share/info", check=True)
    before = (overlay_units(bed), overlay_mounts(bed), area_entries(bed))
    for args, code in NOBODY_COMMANDS:
        result = bed.sdoverlay(*args, user=NOBODY)
        assert "Traceback" not in result.stderr, (args, result.stderr)
        assert result.returncode == code, (args, result.returncode, result.stderr)
        if code:
            assert result.stderr.count("\n") == 1, (args, result.stderr)
    assert (overlay_units(bed), overlay_mounts(bed), area_entries(bed)) == before
    assert bed.sh("find /etc/sdoverlay.d /var/lib/sdoverlay -mindepth 1 2>/dev/null || true").stdout.split() == []
    refused = [e for e in json.loads(bed.sdoverlay("log", "--json", check=True).stdout)
               if e["event"] == "refused" and e["caller_uid"] == NOBODY]
    assert len(refused) == sum(1 for args, code in NOBODY_COMMANDS if code and args[0] != "log")


# 9. health ---------------------------------------------------------------------


def test_an_overlay_whose_upper_dir_was_deleted_is_degraded_until_reset(bed: Container) -> None:
    bed.sdoverlay("unlock", "/usr/share/doc", "--name", "doc", check=True)
    bed.run(["rm", "-rf", "/run/usroverlay/doc/upper"])
    entry = listed(bed)["doc"]
    assert entry["state"] == "degraded" and "/run/usroverlay/doc/upper is missing" in entry["problem"], entry
    assert "doc: degraded: /run/usroverlay/doc/upper is missing" in bed.sdoverlay("list", check=True).stdout
    bed.sdoverlay("reset", "doc", check=True)
    assert listed(bed)["doc"]["state"] == "active"
    bed.sh("echo ok > /usr/share/doc/ok.txt")
    bed.sdoverlay("remove", "doc", check=True)


# 10. PID 1 leaving the bus -------------------------------------------------------


def test_a_daemon_reexec_during_apply_neither_hangs_nor_fails(bed: Container) -> None:
    bed.sh("mkdir -p /srv/big && for i in $(seq 20); do head -c 10M /dev/urandom > /srv/big/f$i; done")
    for delay in (0.1, 0.3, 0.6):
        script = (f"timeout 120 {SDOVERLAY} apply big /srv/big /usr/share/doc --size 1G & pid=$!; "
                  f"sleep {delay}; systemctl daemon-reexec; wait $pid; echo rc=$?")
        assert "rc=0" in bed.sh(script).stdout, delay
        assert listed(bed)["big"]["state"] == "active"
        bed.sdoverlay("remove", "big", check=True)
    nothing_left(bed)


def test_list_and_status_during_a_daemon_reexec_answer(bed: Container) -> None:
    """The CLI's reads go over a blocking connection of their own
    (sdoverlay.blocking); while PID 1 is off the bus they ask again, as the
    service's connection does, and never fail or hang."""
    bed.sdoverlay("unlock", "/usr/share/doc", "--name", "doc", check=True)
    for delay in (0, 0.02, 0.05, 0.1):
        script = (f"systemctl daemon-reexec & sleep {delay}; "
                  f"timeout 60 {SDOVERLAY} list --json > /tmp/list.json; echo list=$?; "
                  f"timeout 60 {SDOVERLAY} status doc --json > /tmp/status.json; echo status=$?; wait")
        output = bed.sh(script).stdout
        assert "list=0" in output and "status=0" in output, (delay, output)
        (entry,) = json.loads(bed.run(["cat", "/tmp/list.json"]).stdout)
        assert entry["name"] == "doc" and entry["state"] == "active", entry
        assert json.loads(bed.run(["cat", "/tmp/status.json"]).stdout)["name"] == "doc"
    bed.sdoverlay("remove", "doc", check=True)
    nothing_left(bed)


# 11. systemd's own reason ------------------------------------------------------


def test_a_failure_is_explained_with_systemds_own_reason(bed: Container) -> None:
    script = (
        "from sdoverlay import diagnostics\n"
        "since = diagnostics.log_point()\n"
        "import subprocess; subprocess.run(['systemd-run', '--wait', '-q', '--unit=broken', '-p', 'User=nosuchuser', '/usr/bin/true'])\n"
        "print(diagnostics.explain('broken.service', 'exit-code', since))\n"
    )
    text = bed.run([str(VENV / "bin" / "python"), "-c", script]).stdout
    assert text.startswith("broken.service failed (exit-code): ") and "status=217/USER" in text, text
