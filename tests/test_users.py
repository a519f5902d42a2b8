"""User overlays through sdoverlay's D-Bus service, with polkit deciding (issue 8).

Every test boots the systemd 252 test bed with the service installed as
`make install` would (tests/testbed.py) and the example polkit rule.
"""

from __future__ import annotations

import json
import time

from tests.test_overlays import NO_ROOM_BELOW_DOC, area_entries, listed, overlay_mounts, overlay_units
from tests.testbed import REPO, Container

ALICE, BOB = 1000, 1001  # alice is in group sdoverlay, bob is not
USERS = f"""
echo 'alice:x:{ALICE}:{ALICE}::/home/alice:/bin/sh' >> /etc/passwd
echo 'bob:x:{BOB}:{BOB}::/home/bob:/bin/sh' >> /etc/passwd
echo 'alice:x:{ALICE}:' >> /etc/group
echo 'bob:x:{BOB}:' >> /etc/group
echo 'sdoverlay:x:990:alice' >> /etc/group
mkdir -p /home/alice/src /home/bob /etc/polkit-1/rules.d
echo mine > /home/alice/src/mine.txt
chown -R alice:alice /home/alice && chown bob:bob /home/bob && chmod 700 /home/alice /home/bob
cp {REPO}/systemd/sdoverlay-polkit.rules /etc/polkit-1/rules.d/50-sdoverlay.rules
"""


def as_user(bed: Container, uid: int, *args: str, **kwargs):
    """sdoverlay as UID, with the groups a login would give it."""
    return bed.sdoverlay(*args, user=uid, login_groups=True, **kwargs)


def nothing_of_ours(bed: Container) -> tuple:
    return overlay_units(bed), overlay_mounts(bed), area_entries(bed)


def test_a_member_manages_own_overlays_and_a_non_member_cannot(bed: Container) -> None:
    bed.sh(USERS)
    result = as_user(bed, ALICE, "unlock", "/usr/share/man", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["owner_uid"] == ALICE
    result = as_user(bed, ALICE, "apply", "docs", "/home/alice/src", "/usr/share/doc")
    assert result.returncode == 0, result.stderr
    assert bed.run(["cat", "/usr/share/doc/mine.txt"]).stdout == "mine\n"
    mine = {name: entry["owner_uid"] for name, entry in listed(bed).items()}
    assert mine == {"usr-share-man": ALICE, "docs": ALICE}
    as_user(bed, ALICE, "list", check=True)
    # A user reads the overlays' metadata as root does (from the area units'
    # files in /run/systemd/transient, which systemd makes world-readable).
    assert json.loads(as_user(bed, ALICE, "list", "--json", check=True).stdout) == list(listed(bed).values())
    bed.sh("echo written > /usr/share/doc/written.txt")
    assert as_user(bed, ALICE, "reset", "docs").returncode == 0
    assert bed.run(["test", "-e", "/usr/share/doc/written.txt"], check=False).returncode == 1
    for name in ("docs", "usr-share-man"):
        result = as_user(bed, ALICE, "remove", name)
        assert result.returncode == 0, result.stderr
    assert nothing_of_ours(bed) == ([], [], [])

    before = nothing_of_ours(bed)
    for args in (["unlock", "/usr/share/man"], ["apply", "b", "/home/bob", "/usr/share/doc"]):
        result = as_user(bed, BOB, *args)
        assert result.returncode == 5, result.stderr
        assert "polkit action org.sdoverlay.create: not allowed" in result.stderr and result.stderr.count("\n") == 1
    assert nothing_of_ours(bed) == before
    refused = [e for e in json.loads(bed.sdoverlay("log", "--json", check=True).stdout) if e["event"] == "refused"]
    assert [(e["caller_uid"], e["verb"]) for e in refused] == [(BOB, "unlock"), (BOB, "apply")]


def test_a_members_failed_mount_is_explained_by_the_kernel_and_rolled_back(bed: Container) -> None:
    """A user's CLI may not read the kernel log (dmesg_restrict); the service
    does, and the user's one line carries overlayfs' reason."""
    bed.sh(USERS + NO_ROOM_BELOW_DOC)
    assert bed.run(["cat", "/proc/sys/kernel/dmesg_restrict"]).stdout.strip() == "1"
    assert bed.run(["dmesg"], user=ALICE, check=False).returncode != 0
    before = nothing_of_ours(bed)
    result = as_user(bed, ALICE, "unlock", "/usr/share/doc/dpkg")
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "usr-share-doc-dpkg.mount failed (exit-code)" in result.stderr
    assert "overlayfs: maximum fs stacking depth exceeded" in result.stderr
    assert nothing_of_ours(bed) == before


def test_a_member_cannot_touch_another_users_overlay(bed: Container) -> None:
    bed.sh(USERS)
    bed.sdoverlay("unlock", "/usr/share/man", "--name", "roots", check=True)
    for verb in ("reset", "remove", "persist"):
        result = as_user(bed, ALICE, verb, "roots")
        assert result.returncode == 5 and "belongs to uid 0, not 1000" in result.stderr, (verb, result.stderr)
        result = as_user(bed, ALICE, verb, "--force", "roots")
        assert result.returncode == 5, (verb, result.stderr)
        assert "polkit action org.sdoverlay." in result.stderr, (verb, result.stderr)
    assert listed(bed)["roots"]["state"] == "active"
    # Creating persistent or setuid overlays is not in the example rule either.
    result = as_user(bed, ALICE, "unlock", "--hotfix", "/usr/share/info")
    assert result.returncode == 5 and "org.sdoverlay.create-persistent" in result.stderr
    bed.sh("cp /usr/bin/true /home/alice/src/tool && chmod 4755 /home/alice/src/tool && chown alice /home/alice/src/tool")
    result = as_user(bed, ALICE, "apply", "s", "/home/alice/src", "/usr/share/doc", "--allow-setuid")
    assert result.returncode == 5 and "org.sdoverlay.allow-setuid" in result.stderr
    bed.sdoverlay("remove", "roots", check=True)
    assert nothing_of_ours(bed) == ([], [], [])


def test_source_is_read_with_the_callers_rights(bed: Container) -> None:
    bed.sh(USERS + """
        echo secret > /root-secret && chmod 600 /root-secret
        cp /root-secret /home/alice/src/secret.txt   # root's, 0600, in alice's readable dir
    """)
    result = as_user(bed, ALICE, "apply", "s", "/home/alice/src", "/usr/share/doc")
    assert result.returncode == 2 and "cannot be read: /home/alice/src/secret.txt" in result.stderr, result.stderr
    assert nothing_of_ours(bed) == ([], [], [])
    # Root reads it: the same request from root works.
    bed.sdoverlay("apply", "s", "/home/alice/src", "/usr/share/doc", check=True)
    bed.sdoverlay("remove", "s", check=True)

    # A file swapped, while the copy runs, for a hard link to a root-only
    # file (one root made for the test: protected_hardlinks would stop
    # alice) or a link to it: the copy runs as alice, so it can never hold
    # the secret; each apply either copies the public file or fails whole.
    bed.sh("""
        rm /home/alice/src/secret.txt
        mkdir -p /home/alice/stash && ln /root-secret /home/alice/stash/hard && ln -s /root-secret /home/alice/stash/soft
        echo public > /home/alice/stash/public
        chown alice:alice /home/alice/stash /home/alice/stash/public && chown -h alice:alice /home/alice/stash/soft
    """)
    swapper = ("cd /home/alice; while true; do mv -f stash/hard src/f; mv -f src/f stash/hard; "
               "cp -P --remove-destination stash/soft src/f; cp --remove-destination stash/public src/f; done")
    bed.sh(f"setsid setpriv --reuid={ALICE} --regid={ALICE} --init-groups sh -c '{swapper}' "
           "</dev/null >/dev/null 2>&1 & echo $! > /tmp/swapper")
    outcomes = []
    for _ in range(12):
        result = as_user(bed, ALICE, "apply", "sw", "/home/alice/src", "/usr/share/doc")
        if result.returncode == 0:
            # A symlink is copied as a link (reading it needs root's rights
            # again); a regular file can only be the public one.
            copied = bed.sh("f=/usr/share/doc/f; if [ -L $f ]; then echo link; elif [ -e $f ]; then cat $f; "
                            "else echo absent; fi").stdout  # absent: copied between two renames
            assert copied in ("link\n", "public\n", "absent\n"), copied
            outcomes.append("copied")
            assert as_user(bed, ALICE, "remove", "sw").returncode == 0
        else:
            assert result.returncode in (1, 2) and result.stderr.count("\n") == 1, result.stderr
            outcomes.append("refused")
        assert nothing_of_ours(bed) == ([], [], [])
    bed.sh("kill $(cat /tmp/swapper)")
    assert "copied" in outcomes


def test_quotas_count_the_caller_and_roots_are_narrower_for_users(bed: Container) -> None:
    bed.sh(USERS + """
        mkdir -p /etc/sdoverlay
        printf '[Overlays]\\nMaxOverlaysPerOwner=1\\nUserAllowedRoots=/usr/share\\n' > /etc/sdoverlay/sdoverlay.conf
    """)
    assert as_user(bed, ALICE, "unlock", "/usr/share/man").returncode == 0
    result = as_user(bed, ALICE, "unlock", "/usr/share/info")
    assert result.returncode == 6 and "uid 1000 has 1 overlay(s)" in result.stderr, result.stderr
    # SUDO_UID from a user means nothing: the owner is the caller the bus names.
    result = as_user(bed, ALICE, "unlock", "/usr/share/info", env={"SUDO_UID": "0"})
    assert result.returncode == 6, result.stderr
    bed.sdoverlay("unlock", "/usr/share/info", check=True)  # root has its own count
    result = as_user(bed, ALICE, "remove", "usr-share-man")
    assert result.returncode == 0, result.stderr
    # Elsewhere a member needs an administrator (sdoverlay.conf(5)).
    result = as_user(bed, ALICE, "unlock", "/usr/bin")
    assert result.returncode == 5 and "org.sdoverlay.create-outside-user-roots: not allowed" in result.stderr, \
        result.stderr
    bed.sdoverlay("remove", "usr-share-info", check=True)
    assert nothing_of_ours(bed) == ([], [], [])


def test_the_service_is_introspectable_and_exits_when_idle(bed: Container) -> None:
    bed.sh("""
        mkdir -p /etc/systemd/system/sdoverlay.service.d
        printf '[Service]\\nEnvironment=SDOVERLAY_IDLE_SECONDS=2\\n' > /etc/systemd/system/sdoverlay.service.d/idle.conf
        systemctl daemon-reload
    """)
    text = bed.run(["busctl", "introspect", "org.sdoverlay.Overlays1", "/org/sdoverlay/Overlays1"]).stdout
    for method in (".Apply", ".Unlock", ".Reset", ".Remove", ".Persist", ".CollectGarbage"):
        assert method in text, text
    assert "org.sdoverlay.Overlays1" in text
    assert bed.run(["systemctl", "is-active", "sdoverlay.service"], check=False).stdout.strip() == "active"
    time.sleep(4)
    assert bed.run(["systemctl", "is-active", "sdoverlay.service"], check=False).stdout.strip() == "inactive"
    bed.sdoverlay("unlock", "/usr/share/man", check=True)  # activated again on the next call
    bed.sdoverlay("remove", "usr-share-man", check=True)



def test_without_an_agent_a_password_prompt_is_a_refusal(bed: Container) -> None:
    """polkit asks for an administrator (AUTH_ADMIN here, auth_admin_keep by
    default in a session): with no agent, or --no-ask-password, it is exit 5,
    one line, nothing created."""
    bed.sh(USERS + """
        cat > /etc/polkit-1/rules.d/40-ask.rules <<'RULE'
polkit.addRule(function(action, subject) {
    if (action.id == "org.sdoverlay.create" && subject.user == "bob") { return polkit.Result.AUTH_ADMIN; }
    return polkit.Result.NOT_HANDLED;
});
RULE
    """)
    for args in (["unlock", "/usr/share/man"], ["unlock", "/usr/share/man", "--no-ask-password"]):
        result = as_user(bed, BOB, *args)
        assert result.returncode == 5 and result.stderr.count("\n") == 1, result.stderr
        assert "authentication is required and no polkit agent answered" in result.stderr, result.stderr
    assert nothing_of_ours(bed) == ([], [], [])
