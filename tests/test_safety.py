"""Safe by construction: refusals, content checks, ownership, quotas, audit trail.

One container for the whole refusal table: every case must leave the units,
mounts and /run/usroverlay exactly as they were, and add one refusal to the
journal with the same message the user saw.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.test_overlays import listed, snapshot
from tests.testbed import NOBODY, REPO, Container

REFUSED = "b42aafb602eb45ada0e64f18c0956bc0"
APPLIED = "3a8a135b4a5b4f5792bf7d6eaac70816"
CAPABILITY_BLOB = "struct.pack('<5I', 0x02000001, 1 << 13, 0, 0, 0)"  # cap_net_raw, effective

SETUP = f"""
mkdir -p /srv/src/sub && echo plain > /srv/src/top.txt && echo deep > /srv/src/sub/deep.txt
mkdir -p /srv/suid && cp /srv/src/top.txt /srv/suid/tool && chmod 4755 /srv/suid/tool
mkdir -p /srv/sgid && cp /srv/src/top.txt /srv/sgid/tool && chmod 2755 /srv/sgid/tool
mkdir -p /srv/caps && cp /srv/src/top.txt /srv/caps/tool
python3 -c "import os, struct; os.setxattr('/srv/caps/tool', 'security.capability', {CAPABILITY_BLOB})"
mkdir -p /srv/fifo && mkfifo /srv/fifo/pipe
mkdir -p /srv/sock && python3 -c "import socket; socket.socket(socket.AF_UNIX).bind('/srv/sock/s')"
mkdir -p /srv/wwfile && echo x > /srv/wwfile/f && chmod 666 /srv/wwfile/f
mkdir -p /srv/wwdir/open && chmod 777 /srv/wwdir/open
mkdir -p /srv/big && head -c 3M /dev/zero > /srv/big/blob
ln -s /srv/loop /srv/loop
mkdir -p /etc/ssl/certs
mkdir -p '/srv/allowed/a,b' /srv/allowed/nested/inner
mount -t tmpfs tmpfs /srv/allowed/nested/inner
mkdir -p /srv/allowed/$(python3 -c "print('/'.join(['d' * 60] * 5))")
mkdir -p /etc/sdoverlay/sdoverlay.conf.d
printf '[Overlays]\\nAllowedRoots=/usr /srv/allowed\\n' > /etc/sdoverlay/sdoverlay.conf
"""

LONG_DIR = "/srv/allowed/" + "/".join(["d" * 60] * 5)

# (setup shell or "", argv, user or None, env, exit code, message part)
CASES: list[tuple[str, list[str], int | None, dict[str, str], int, str]] = [
    # names
    ("", ["apply", "", "/srv/src", "/usr/share/man"], None, {}, 2, "invalid overlay name ''"),
    ("", ["apply", "--", "-lead", "/srv/src", "/usr/share/man"], None, {}, 2, "invalid overlay name '-lead'"),
    ("", ["apply", "a/b", "/srv/src", "/usr/share/man"], None, {}, 2, "invalid overlay name 'a/b'"),
    ("", ["apply", "a.b", "/srv/src", "/usr/share/man"], None, {}, 2, "invalid overlay name 'a.b'"),
    ("", ["apply", "a b", "/srv/src", "/usr/share/man"], None, {}, 2, "invalid overlay name 'a b'"),
    ("", ["apply", "x" * 65, "/srv/src", "/usr/share/man"], None, {}, 2, "names are 1-64 characters"),
    ("", ["apply", "ünï", "/srv/src", "/usr/share/man"], None, {}, 2, "invalid overlay name 'ünï'"),
    ("", ["apply", "a\nb", "/srv/src", "/usr/share/man"], None, {}, 2, "invalid overlay name 'a\\nb'"),
    ("", ["unlock", "/usr/share/man", "--name", "bad.name"], None, {}, 2, "invalid overlay name 'bad.name'"),
    ("", ["apply", "-x", "/srv/src", "/usr/share/man"], None, {}, 2, "No such option: -x"),
    # targets
    ("", ["apply", "t", "/srv/src", ""], None, {}, 2, "target is empty"),
    ("", ["apply", "t", "/srv/src", "usr/share/man"], None, {}, 2, "target 'usr/share/man' is not an absolute path"),
    ("", ["apply", "t", "/srv/src", "/usr/../etc"], None, {}, 2, "contains '..'"),
    ("", ["apply", "t", "/srv/src", "/usr/share/doc/../man"], None, {}, 2, "contains '..'"),
    ("", ["apply", "t", "/srv/src", "/etc"], None, {}, 2, "target /etc is not at or under an allowed root (/usr /srv/allowed)"),
    ("", ["apply", "t", "/srv/src", "/usr/share/man\x01"], None, {}, 2, "contains control characters"),
    ("", ["apply", "t", "/srv/src", "/usr/" + "a" * 5000], None, {}, 2, "target is longer than 4095 bytes"),
    ("", ["apply", "t", "/srv/src", "/usr/share/missing"], None, {}, 3, "target /usr/share/missing does not exist"),
    ("", ["apply", "t", "/srv/src", "/usr/share/doc/dpkg/copyright"], None, {}, 2, "is not a directory"),
    ("", ["apply", "t", "/srv/src", "/usr/lib/ssl/certs"], None, {}, 2,
     "target /usr/lib/ssl/certs (resolves to /etc/ssl/certs) is not at or under an allowed root"),
    ("", ["apply", "t", "/srv/src", "/usr/lib64x"], None, {}, 3, "does not exist"),
    ("", ["apply", "t", "/srv/src", "/srv/allowed/a,b"], None, {}, 2, "contains characters overlay mount options cannot carry: ','"),
    ("", ["apply", "t", "/srv/src", LONG_DIR], None, {}, 2, "is too long for a systemd unit name"),
    ("", ["apply", "t", "/srv/src", "/srv/allowed/nested"], None, {}, 4,
     "/srv/allowed/nested has mounts beneath it that the overlay would hide: /srv/allowed/nested/inner"),
    # conflicts with overlay "first" on /usr/share/doc
    ("", ["apply", "first", "/srv/src", "/usr/share/man"], None, {}, 4, "an overlay named 'first' exists already"),
    ("", ["apply", "t", "/srv/src", "/usr/share/doc"], None, {}, 4, "overlaps /usr/share/doc, the target of overlay 'first'"),
    ("", ["apply", "t", "/srv/src", "/usr/share/doc/dpkg"], None, {}, 4, "overlaps /usr/share/doc"),
    ("", ["apply", "t", "/srv/src", "/usr/share"], None, {}, 4, "/usr/share overlaps /usr/share/doc"),
    ("", ["unlock"], None, {}, 4, "/usr overlaps /usr/share/doc"),
    # sources
    ("", ["apply", "t", "", "/usr/share/man"], None, {}, 2, "source is empty"),
    ("", ["apply", "t", "/srv/missing", "/usr/share/man"], None, {}, 3, "source /srv/missing does not exist"),
    ("", ["apply", "t", "/srv/src\x02", "/usr/share/man"], None, {}, 2, "source '/srv/src\\x02' contains control characters"),
    ("", ["apply", "t", "/srv/loop", "/usr/share/man"], None, {}, 2, "source /srv/loop cannot be resolved: Too many levels of symbolic links"),
    ("", ["apply", "t", "/dev/null", "/usr/share/man"], None, {}, 2, "has device nodes, FIFOs or sockets, which an overlay must not carry: /dev/null"),
    ("", ["apply", "t", "/srv/fifo", "/usr/share/man"], None, {}, 2, "device nodes, FIFOs or sockets, which an overlay must not carry: /srv/fifo/pipe"),
    ("", ["apply", "t", "/srv/sock", "/usr/share/man"], None, {}, 2, "must not carry: /srv/sock/s"),
    ("", ["apply", "t", "/srv/suid", "/usr/share/man"], None, {}, 2,
     "has setuid/setgid files or file capabilities: /srv/suid/tool; pass --allow-setuid"),
    ("", ["apply", "t", "/srv/sgid/tool", "/usr/share/man"], None, {}, 2, "setuid/setgid files or file capabilities: /srv/sgid/tool"),
    ("", ["apply", "t", "/srv/caps", "/usr/share/man"], None, {}, 2, "file capabilities: /srv/caps/tool"),
    ("", ["apply", "t", "/srv/wwfile", "/usr/share/man"], None, {}, 2,
     "has world-writable entries: /srv/wwfile/f; pass --allow-world-writable"),
    ("", ["apply", "t", "/srv/wwdir", "/usr/share/man"], None, {}, 2, "world-writable entries: /srv/wwdir/open"),
    # sizes
    ("", ["apply", "--size", "lots", "t", "/srv/src", "/usr/share/man"], None, {}, 2, "invalid size 'lots'"),
    ("", ["apply", "--size", "0", "t", "/srv/src", "/usr/share/man"], None, {}, 2, "invalid size '0'"),
    ("", ["apply", "--size", "101%", "t", "/srv/src", "/usr/share/man"], None, {}, 2, "invalid size '101%'"),
    ("", ["apply", "--size", "1M", "t", "/srv/big", "/usr/share/man"], None, {}, 6,
     "source /srv/big needs 3145728 bytes, more than --size 1M (1048576 bytes)"),
    # permissions and ownership
    ("", ["apply", "t", "/srv/src", "/usr/share/man"], NOBODY, {}, 5, "polkit action org.sdoverlay.create: not allowed"),
    ("", ["unlock", "/usr/share/man"], NOBODY, {}, 5, "polkit action org.sdoverlay.create: not allowed"),
    ("", ["remove", "first"], NOBODY, {}, 5, "overlay 'first' belongs to uid 0, not 65534; pass --force to remove it"),
    ("", ["remove", "--force", "first"], NOBODY, {}, 5, "polkit action org.sdoverlay.manage-others: not allowed"),
    ("", ["reset", "--force", "first"], NOBODY, {}, 5, "polkit action org.sdoverlay.manage-others: not allowed"),
    ("", ["remove", "first"], None, {"SUDO_UID": "1000"}, 5, "belongs to uid 0, not 1000; pass --force to remove it"),
    ("", ["reset", "first"], None, {"SUDO_UID": "1000"}, 5, "belongs to uid 0, not 1000; pass --force to reset it"),
    ("", ["remove", "nosuch"], None, {}, 3, "no overlay named 'nosuch'"),
    ("", ["reset", "nosuch"], None, {}, 3, "no overlay named 'nosuch'"),
    # configuration and quotas
    ("printf '[Overlays]\\nMaxOverlaysPerOwner=lots\\n' > /etc/sdoverlay/sdoverlay.conf.d/50-bad.conf",
     ["apply", "t", "/srv/src", "/usr/share/man"], None, {}, 2, "50-bad.conf: MaxOverlaysPerOwner=: 'lots' is not a number"),
    ("printf '[Overlays]\\nMaxOverlaysPerOwner=1\\n' > /etc/sdoverlay/sdoverlay.conf.d/50-bad.conf",
     ["apply", "t", "/srv/src", "/usr/share/man"], None, {}, 6, "uid 0 has 1 overlay(s), the most MaxOverlaysPerOwner= allows"),
    ("printf '[Overlays]\\nMaxBytesPerOwner=100M\\n' > /etc/sdoverlay/sdoverlay.conf.d/50-bad.conf",
     ["apply", "--size", "64M", "t", "/srv/src", "/usr/share/man"], None, {}, 6,
     "uid 0 would have 134217728 bytes of overlays (67108864 now, 67108864 asked), over MaxBytesPerOwner=104857600"),
    # another owner is limited by its own count, not by uid 0's overlays
    ("printf '[Overlays]\\nMaxOverlaysPerOwner=0\\n' > /etc/sdoverlay/sdoverlay.conf.d/50-bad.conf",
     ["apply", "t", "/srv/src", "/usr/share/man"], None, {"SUDO_UID": "1000"}, 6,
     "uid 1000 has 0 overlay(s), the most MaxOverlaysPerOwner= allows"),
]


def journal_entries(bed: Container, message_id: str) -> list[dict]:
    out = bed.run(["journalctl", "-o", "json", "--no-pager", f"MESSAGE_ID={message_id}"], check=False).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def wait_for_entries(bed: Container, message_id: str, count: int) -> list[dict]:
    for _ in range(50):
        entries = journal_entries(bed, message_id)
        if len(entries) >= count:
            return entries
        time.sleep(0.05)
    return journal_entries(bed, message_id)


def test_every_bad_request_is_refused_cleanly_and_audited(bed: Container) -> None:
    assert len(CASES) >= 40
    bed.sh(SETUP)
    bed.sdoverlay("apply", "--size", "64M", "first", "/srv/src", "/usr/share/doc", check=True)
    before = snapshot(bed)
    refusals = len(journal_entries(bed, REFUSED))
    for setup, argv, user, env, code, message in CASES:
        if setup:
            bed.sh(setup)
        result = bed.sdoverlay(*argv, user=user, env=env)
        case = (argv, user, env, result.stderr)
        assert result.returncode == code, case
        assert message in result.stderr, case
        assert result.stderr.count("\n") == 1 and result.stdout == "", case
        assert snapshot(bed) == before, case
        refusals += 1
        entries = wait_for_entries(bed, REFUSED, refusals)
        assert len(entries) == refusals, case
        line = result.stderr.strip()
        assert line.endswith(entries[-1]["SDOVERLAY_RESULT"]), (case, entries[-1])
        assert entries[-1]["SDOVERLAY_VERB"] == argv[0], (case, entries[-1])


def test_allowed_setuid_copy_keeps_the_bit_owned_by_root(bed: Container) -> None:
    # chown(2) clears setuid bits and capabilities: set them again after it.
    bed.sh(SETUP + f"""
        chown -R 1000:1000 /srv/suid /srv/src /srv/caps && chmod 4755 /srv/suid/tool
        python3 -c "import os, struct; os.setxattr('/srv/caps/tool', 'security.capability', {CAPABILITY_BLOB})"
    """)
    assert bed.run(["stat", "-c", "%a %u:%g", "/srv/suid/tool"]).stdout == "4755 1000:1000\n"
    bed.sdoverlay("apply", "--allow-setuid", "suid", "/srv/suid", "/usr/share/man", check=True)
    assert bed.run(["stat", "-c", "%a %u:%g", "/usr/share/man/tool"]).stdout == "4755 0:0\n"
    bed.sdoverlay("apply", "--allow-setuid", "caps", "/srv/caps", "/usr/share/info", check=True)
    assert bed.run(["stat", "-c", "%u:%g", "/usr/share/info/tool"]).stdout == "0:0\n"
    caps = bed.run(["python3", "-c", "import os; print(os.getxattr('/usr/share/info/tool', 'security.capability').hex())"])
    assert caps.stdout.strip() == "0100000200200000000000000000000000000000"
    # A normal user's files land owned by root; with --keep-ownership they keep theirs.
    bed.sdoverlay("apply", "plain", "/srv/src", "/usr/share/doc", check=True)
    assert bed.run(["stat", "-c", "%u:%g", "/usr/share/doc/top.txt", "/usr/share/doc/sub"]).stdout == "0:0\n0:0\n"
    assert bed.run(["stat", "-c", "%a %U", "/usr/share/doc"]).stdout == "755 root\n"
    bed.sdoverlay("remove", "plain", check=True)
    bed.sdoverlay("apply", "--keep-ownership", "kept", "/srv/src", "/usr/share/doc", check=True)
    assert bed.run(["stat", "-c", "%u:%g", "/usr/share/doc/top.txt"]).stdout == "1000:1000\n"
    entry = listed(bed)["kept"]
    assert entry["keep_ownership"] is True and entry["allow_setuid"] is False


def test_symlinks_are_copied_as_links_never_followed(bed: Container) -> None:
    bed.sh(SETUP + "ln -s ../../../etc/shadow /srv/src/escape; ln -s self /srv/src/self; ln -s /srv/src /srv/srclink")
    # A SOURCE given through a symlink is resolved; links inside are kept as links.
    bed.sdoverlay("apply", "links", "/srv/srclink", "/usr/share/doc", check=True)
    assert bed.run(["readlink", "/usr/share/doc/escape"]).stdout == "../../../etc/shadow\n"
    assert bed.run(["readlink", "/usr/share/doc/self"]).stdout == "self\n"
    assert listed(bed)["links"]["source"] == "/srv/src"


def test_sudo_owner_is_recorded_and_audited_with_all_fields(bed: Container) -> None:
    bed.sh(SETUP)
    bed.sdoverlay("apply", "mine", "/srv/src", "/usr/share/doc", env={"SUDO_UID": "1000"}, check=True)
    assert listed(bed)["mine"]["owner_uid"] == 1000
    assert bed.sdoverlay("list", "--json", "--user", "1000", check=True).stdout.count('"name": "mine"') == 1
    assert json.loads(bed.sdoverlay("list", "--json", "--user", "0", check=True).stdout) == []

    entries = wait_for_entries(bed, APPLIED, 1)
    assert len(entries) == 1
    entry = entries[0]
    assert entry["SDOVERLAY_NAME"] == "mine"
    assert entry["SDOVERLAY_TARGET"] == "/usr/share/doc"
    assert entry["SDOVERLAY_SOURCE"] == "/srv/src"
    assert entry["SDOVERLAY_OWNER_UID"] == "1000"
    assert "SDOVERLAY_SESSION" in entry  # empty: nsenter runs outside any login session
    assert entry["SDOVERLAY_RESULT"] == "ok"
    assert entry["SYSLOG_IDENTIFIER"] == "sdoverlay"

    # Another user's overlay: refused without --force, removed with it.
    result = bed.sdoverlay("remove", "mine")
    assert result.returncode == 5 and "belongs to uid 1000, not 0" in result.stderr
    bed.sdoverlay("remove", "--force", "mine", check=True)

    history = json.loads(bed.sdoverlay("log", "--json", "mine", check=True).stdout)
    history = sorted(history, key=lambda h: h["time"])
    assert [(h["event"], h["verb"]) for h in history if h["verb"] != "unit"] == [
        ("applied", "apply"), ("refused", "remove"), ("removed", "remove")]
    # The units' own records of their start and stop, with the overlay's fields.
    assert [(h["event"], h["owner_uid"]) for h in history if h["verb"] == "unit"] == [("started", 1000), ("stopped", 1000)]
    assert history[0]["owner_uid"] == 1000 and history[0]["target"] == "/usr/share/doc"
    text = bed.sdoverlay("log", "mine", check=True).stdout
    assert "applied  apply  mine  /usr/share/doc  uid=1000" in text
    assert "belongs to uid 1000" in text


def test_example_polkit_rule_grants_only_our_create_action(bed: Container) -> None:
    """The shipped rule lets group members create transient overlays, and
    nothing else: not persistent ones, not setuid content, not others'
    overlays, and never systemd's manage-units."""
    rule = (REPO / "systemd" / "sdoverlay-polkit.rules").read_text()
    bed.run(["sh", "-c", "mkdir -p /etc/polkit-1/rules.d && cat > /etc/polkit-1/rules.d/50-sdoverlay.rules"], input=rule)
    bed.sh("groupadd -r sdoverlay && useradd -M -G sdoverlay alice && useradd -M bob")
    pids = {}
    for user in ("alice", "bob"):
        uid = bed.run(["id", "-u", user]).stdout.strip()
        bed.run(["systemd-run", f"--unit={user}-shell", f"--uid={uid}", "sleep", "600"])
        pids[user] = bed.run(["systemctl", "show", "-P", "MainPID", f"{user}-shell"]).stdout.strip()

    def granted(user: str, action: str) -> bool:
        argv = ["pkcheck", "--action-id", action, "--process", pids[user], "--detail", "target", "/usr/share/doc"]
        return bed.run(argv, check=False).returncode == 0

    assert granted("alice", "org.sdoverlay.create")
    for action in ("org.sdoverlay.create-persistent", "org.sdoverlay.manage-others", "org.sdoverlay.allow-setuid",
                   "org.sdoverlay.collect-garbage", "org.sdoverlay.create-outside-user-roots",
                   "org.freedesktop.systemd1.manage-units"):
        assert not granted("alice", action), action
    assert not granted("bob", "org.sdoverlay.create")


@pytest.mark.parametrize("path", ["systemd/sdoverlay-polkit.rules", "systemd/sdoverlay.catalog", "systemd/org.sdoverlay.policy",
                                  "systemd/org.sdoverlay.Overlays1.service", "systemd/org.sdoverlay.Overlays1.conf",
                                  "systemd/sdoverlay.service.in"])
def test_shipped_files_exist(path: str) -> None:
    assert (Path(REPO) / path).is_file()
