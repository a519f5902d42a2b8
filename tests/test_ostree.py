"""sdoverlay on a real ostree deployment (tests/ostree.py): Debian 12
(systemd 252) with the .deb installed into the tree before the commit,
deployed with `ostree admin deploy`, booted as ostree-prepare-root leaves
a host; its /etc and /var persist across boots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import require_test_bed
from tests.ostree import Sysroot, tree
from tests.testbed import Container

ALICE = 1000
VENDOR = {"/usr/lib/sdoverlay.d/vendor-tools.conf": "[Overlay]\nTarget=/usr/local/bin\nSource=/usr/lib/vendor-tools\n",
          "/usr/lib/vendor-tools/vendor-hello": "#!/bin/sh\necho vendor tool\n"}
# Into the deployment's /etc before it boots: it persists, as a host's does.
USERS = f"""
echo 'alice:x:{ALICE}:{ALICE}::/var/home/alice:/bin/sh' >> /etc/passwd
echo 'alice:x:{ALICE}:' >> /etc/group
echo 'sdoverlay:x:990:alice' >> /etc/group
mkdir -p /var/home/alice/src /etc/polkit-1/rules.d /var/srv/src
echo mine > /var/home/alice/src/mine.txt && echo applied > /var/srv/src/applied.txt
chown -R {ALICE}:{ALICE} /var/home/alice && chmod 700 /var/home/alice
cp /usr/share/doc/sdoverlay/examples/50-sdoverlay.rules /etc/polkit-1/rules.d/
"""


@pytest.fixture
def deployed(package: tuple[Path, str], tmp_path: Path) -> tuple[Sysroot, Path]:
    require_test_bed()
    deb, _ = package
    sysroot = Sysroot(tmp_path)
    sysroot.commit(tree(tmp_path / "first", deb, VENDOR), "first")
    return sysroot, sysroot.deploy()


def listed(bed: Container, user: int | None = None) -> dict[str, dict]:
    result = bed.sdoverlay("list", "--json", user=user, login_groups=user is not None, check=True)
    return {entry["name"]: entry for entry in json.loads(result.stdout)}


def test_the_lifecycle_on_an_ostree_deployment_as_root_and_as_a_member(deployed: tuple[Sysroot, Path]) -> None:
    sysroot, deployment = deployed
    with sysroot.boot(deployment) as bed:
        status = bed.run(["ostree", "admin", "status"]).stdout
        assert f"* debian {deployment.name}" in status, status
        bed.sh(USERS)
        # The vendor drop-in in the commit is mounted at boot.
        assert listed(bed)["vendor-tools"]["state"] == "active"
        assert bed.run(["/usr/local/bin/vendor-hello"]).stdout == "vendor tool\n"
        # Root: apply, unlock, reset, remove, persist, hotfix.
        bed.sdoverlay("apply", "doc", "/srv/src", "/usr/share/doc", check=True)
        assert bed.run(["cat", "/usr/share/doc/applied.txt"]).stdout == "applied\n"
        bed.sh("echo written > /usr/share/doc/written.txt")
        bed.sdoverlay("reset", "doc", check=True)
        assert bed.run(["test", "-e", "/usr/share/doc/written.txt"], check=False).returncode == 1
        bed.sdoverlay("persist", "doc", check=True)
        bed.sdoverlay("unlock", "/usr/share/info", "--hotfix", "--name", "hot", check=True)
        bed.sh("echo hot > /usr/share/info/hot.txt")
        bed.sdoverlay("unlock", "/usr/share/locale", "--name", "transient", check=True)
        # A member of the example group, from their home in /var.
        result = bed.sdoverlay("apply", "mine", "/home/alice/src", "/usr/share/man", user=ALICE, login_groups=True)
        assert result.returncode == 0, result.stderr
        assert bed.run(["cat", "/usr/share/man/mine.txt"]).stdout == "mine\n"
        assert listed(bed, user=ALICE)["mine"]["owner_uid"] == ALICE
        for verb in ("reset", "remove"):
            result = bed.sdoverlay(verb, "mine", user=ALICE, login_groups=True)
            assert result.returncode == 0, result.stderr
        result = bed.sdoverlay("unlock", "/usr/share/man", "--name", "alices", user=ALICE, login_groups=True)
        assert result.returncode == 0, result.stderr
        bed.sh("echo x > /usr/share/man/x.txt")
        # Persistent overlays and places that make a member root need an administrator.
        for args, action in ((["persist", "alices"], "create-persistent"),
                             (["unlock", "/usr/share/info", "--hotfix", "--name", "ah"], "create-persistent"),
                             (["unlock", "/usr/bin"], "create-outside-user-roots")):
            result = bed.sdoverlay(*args, user=ALICE, login_groups=True)
            assert result.returncode == 5 and f"polkit action org.sdoverlay.{action}: not allowed" in result.stderr, \
                result.stderr
        result = bed.sdoverlay("remove", "alices", user=ALICE, login_groups=True)
        assert result.returncode == 0, result.stderr
        assert "* debian" in bed.run(["ostree", "admin", "status"]).stdout
    # A reboot: the persistent ones come back from /etc and /var, the transient one is gone.
    with sysroot.boot(deployment) as bed:
        found = listed(bed)
        assert {name: entry["state"] for name, entry in found.items()} == {
            "doc": "active", "hot": "active", "vendor-tools": "active"}, found
        assert bed.run(["cat", "/usr/share/doc/applied.txt"]).stdout == "applied\n"
        assert bed.run(["cat", "/usr/share/info/hot.txt"]).stdout == "hot\n"
        for name in ("doc", "hot"):
            bed.sdoverlay("remove", name, check=True)
        assert set(listed(bed)) == {"vendor-tools"}
        assert bed.sh("find /etc/sdoverlay.d /var/lib/sdoverlay -mindepth 1 2>/dev/null || true").stdout == ""


def test_ostree_admin_unlock_beside_sdoverlay_both_ways_round(deployed: tuple[Sysroot, Path]) -> None:
    sysroot, deployment = deployed
    with sysroot.boot(deployment) as bed:
        bed.sh("mkdir -p /var/srv/src && echo applied > /var/srv/src/applied.txt")
        bed.sdoverlay("apply", "doc", "/srv/src", "/usr/share/doc", check=True)
        # ostree's unlock mounts its overlay on /usr over sdoverlay's: they are hidden, and say by what.
        assert "Development mode enabled" in bed.run(["ostree", "admin", "unlock"]).stdout
        bed.sh("touch /usr/bin/from-ostree-unlock")
        found = listed(bed)
        for name in ("doc", "vendor-tools"):
            assert found[name]["state"] == "hidden", found[name]
            assert found[name]["problem"].startswith("hidden by ostree admin unlock's overlay on /usr"), found[name]
            assert "until the next boot" in found[name]["problem"]
        result = bed.sdoverlay("remove", "doc")
        assert result.returncode == 4 and result.stderr.count("\n") == 1, result.stderr
        assert "ostree admin unlock's overlay" in result.stderr
        # sdoverlay's verbs after it work on top of ostree's overlay.
        status = json.loads(bed.sdoverlay("unlock", "/usr/share/man", "--json", check=True).stdout)
        assert status["state"] == "active"
        bed.sh("echo mine > /usr/share/man/mine.txt")
        bed.sdoverlay("reset", "usr-share-man", check=True)
        bed.sdoverlay("remove", "usr-share-man", check=True)
        assert "Unlocked: development" in bed.run(["ostree", "admin", "status"]).stdout
    # The next boot ends ostree's overlay: sdoverlay's own come back (the drop-in's), or are gone (transient).
    with sysroot.boot(deployment) as bed:
        assert {name: entry["state"] for name, entry in listed(bed).items()} == {"vendor-tools": "active"}
        assert bed.run(["test", "-e", "/usr/bin/from-ostree-unlock"], check=False).returncode == 1
        # --hotfix: the same, by an overlay that the deployment keeps.
        bed.sdoverlay("unlock", "/usr/share/doc", "--name", "doc", check=True)
        assert "Hotfix mode enabled" in bed.run(["ostree", "admin", "unlock", "--hotfix"]).stdout
        found = listed(bed)["doc"]
        assert found["state"] == "hidden" and found["problem"].startswith(
            "hidden by ostree admin unlock --hotfix's overlay on /usr"), found
        assert "for as long as this deployment is booted" in found["problem"]
        bed.sdoverlay("unlock", "/usr/share/man", check=True)
        bed.sh("echo mine > /usr/share/man/mine.txt")
        bed.sdoverlay("remove", "usr-share-man", check=True)
        status = bed.run(["ostree", "admin", "status"]).stdout
        assert "Unlocked: hotfix" in status and "(rollback)" in status, status


def test_an_upgrade_leaves_persistent_overlays_stale_until_removed_or_rebased(
        package: tuple[Path, str], deployed: tuple[Sysroot, Path]) -> None:
    sysroot, first = deployed
    with sysroot.boot(first) as bed:
        bed.sh("mkdir -p /var/srv/src && echo applied > /var/srv/src/applied.txt")
        bed.sdoverlay("apply", "doc", "/srv/src", "/usr/share/doc", check=True)
        bed.sdoverlay("persist", "doc", check=True)
        bed.sdoverlay("unlock", "/usr/share/info", "--hotfix", "--name", "hot", check=True)
        bed.sh("echo hot > /usr/share/info/hot.txt")
        assert f"Image=ostree:{first.name.partition('.')[0]}" in bed.run(["cat", "/etc/sdoverlay.d/hot.conf"]).stdout
    # A new commit (a file changed under /usr), deployed: /etc carried over, /var shared.
    deb, _ = package
    newer = tree(sysroot.directory / "second", deb, {**VENDOR, "/usr/share/info/new-in-second": "second\n"})
    sysroot.commit(newer, "second")
    second = sysroot.deploy()
    with sysroot.boot(second) as bed:
        assert bed.run(["cat", "/usr/share/info/new-in-second"]).stdout == "second\n"
        found = listed(bed)
        assert found["vendor-tools"]["state"] == "active"  # part of the image: never stale
        for name in ("doc", "hot"):
            assert found[name]["state"] == "stale", found[name]
            assert found[name]["problem"].startswith(f"made on ostree commit {first.name[:12]}, this boot runs "
                                                     f"ostree commit {second.name[:12]}: not mounted"), found[name]
        assert bed.run(["test", "-e", "/usr/share/info/hot.txt"], check=False).returncode == 1
        assert bed.run(["test", "-e", "/usr/share/doc/applied.txt"], check=False).returncode == 1
        assert "stale" in bed.sdoverlay("status", "hot", check=True).stdout
        said = bed.run(["journalctl", "-b", "-o", "cat", "SYSLOG_IDENTIFIER=sdoverlay-generator"]).stdout
        assert said.count("overlay hot was made on ostree commit") == 1, said
        bed.run(["systemctl", "daemon-reload"])  # once a boot, not once a reload
        said = bed.run(["journalctl", "-b", "-o", "cat", "SYSLOG_IDENTIFIER=sdoverlay-generator"]).stdout
        assert said.count("overlay hot was made on ostree commit") == 1, said
        result = bed.sdoverlay("reset", "hot")
        assert result.returncode == 4 and "overlay 'hot' is stale: made on" in result.stderr, result.stderr
        result = bed.sdoverlay("unlock", "/usr/share/info", "--hotfix", "--name", "hot")
        assert result.returncode == 4 and result.stderr.count("\n") == 1, result.stderr
    # Back in the first deployment: its own /etc, the shared /var: mounted again.
    with sysroot.boot(first) as bed:
        found = listed(bed)
        assert (found["doc"]["state"], found["hot"]["state"]) == ("active", "active"), found
        assert bed.run(["cat", "/usr/share/info/hot.txt"]).stdout == "hot\n"
    # In the second again: one removed, the other knowingly laid over it.
    with sysroot.boot(second) as bed:
        bed.sdoverlay("remove", "hot", check=True)
        assert bed.run(["test", "-e", "/etc/sdoverlay.d/hot.conf"], check=False).returncode == 1
        status = json.loads(bed.sdoverlay("persist", "--rebase", "doc", "--json", check=True).stdout)
        assert status["state"] == "active", status
        assert bed.run(["cat", "/usr/share/doc/applied.txt"]).stdout == "applied\n"
        assert f"Image=ostree:{second.name.partition('.')[0]}" in bed.run(["cat", "/etc/sdoverlay.d/doc.conf"]).stdout
        assert set(listed(bed)) == {"doc", "vendor-tools"}
        result = bed.sdoverlay("persist", "--rebase", "doc")
        assert result.returncode == 4 and "is not stale" in result.stderr, result.stderr
