"""The user story on a second real OS: Debian 13, systemd 257, Python 3.13,
sdoverlay installed in the image's /usr by `make install` (tests/image.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_test_bed
from tests.image import INSTALLED_PACKAGE, UNCOMPILED_MODULES, image
from tests.test_users import ALICE, BOB
from tests.testbed import Container

INSTALLED_RULE = "/usr/share/doc/sdoverlay/examples/50-sdoverlay.rules"
USERS = f"""
echo 'alice:x:{ALICE}:{ALICE}::/home/alice:/bin/sh' >> /etc/passwd
echo 'bob:x:{BOB}:{BOB}::/home/bob:/bin/sh' >> /etc/passwd
printf 'alice:x:{ALICE}:\\nbob:x:{BOB}:\\nsdoverlay:x:990:alice\\n' >> /etc/group
mkdir -p /home/alice/src /home/bob /etc/polkit-1/rules.d
echo mine > /home/alice/src/mine.txt
chown -R {ALICE}:{ALICE} /home/alice && chmod 700 /home/alice
cp {INSTALLED_RULE} /etc/polkit-1/rules.d/50-sdoverlay.rules
"""


@pytest.fixture
def debian13(tmp_path: Path) -> Iterator[Container]:
    require_test_bed()
    with Container(root=str(image(tmp_path))) as bed:
        yield bed


def test_user_story_on_systemd_257(debian13: Container) -> None:
    bed = debian13
    assert bed.run(["systemctl", "--version"]).stdout.startswith("systemd 257")
    assert bed.run(["python3", "--version"]).stdout.startswith("Python 3.13")
    bed.sh(USERS)
    result = bed.sdoverlay("unlock", "/usr/share/man", "--json", user=ALICE, login_groups=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["owner_uid"] == ALICE
    result = bed.sdoverlay("apply", "docs", "/home/alice/src", "/usr/share/doc", user=ALICE, login_groups=True)
    assert result.returncode == 0, result.stderr
    assert bed.run(["cat", "/usr/share/doc/mine.txt"]).stdout == "mine\n"
    listed = {e["name"]: e["owner_uid"] for e in json.loads(bed.sdoverlay("list", "--json", user=ALICE, login_groups=True, check=True).stdout)}
    assert listed == {"docs": ALICE, "usr-share-man": ALICE}
    bed.sh("echo w > /usr/share/doc/w.txt")
    assert bed.sdoverlay("reset", "docs", user=ALICE, login_groups=True).returncode == 0
    assert bed.run(["test", "-e", "/usr/share/doc/w.txt"], check=False).returncode == 1

    result = bed.sdoverlay("unlock", "/usr/share/info", user=BOB, login_groups=True)
    assert result.returncode == 5 and "polkit action org.sdoverlay.create: not allowed" in result.stderr, result.stderr
    bed.sdoverlay("unlock", "/usr/share/info", "--name", "roots", check=True)
    result = bed.sdoverlay("remove", "--force", "roots", user=ALICE, login_groups=True)
    assert result.returncode == 5 and "org.sdoverlay.manage-others" in result.stderr, result.stderr
    for name in ("docs", "usr-share-man"):
        assert bed.sdoverlay("remove", name, user=ALICE, login_groups=True).returncode == 0
    bed.sdoverlay("remove", "roots", check=True)
    assert json.loads(bed.sdoverlay("list", "--json", check=True).stdout) == []
    units = bed.run(["systemctl", "list-units", "--all", "--plain", "--no-legend", "*usroverlay*"]).stdout
    assert units.strip() == ""


# The root partition of a DDI, found by the erofs magic at 1024 bytes into
# it (its GPT type differs per architecture), copied out for fsck.erofs.
EROFS_ROOT_OF_DDI = """
import struct, sys
image, out = sys.argv[1], sys.argv[2]
with open(image, "rb") as f:
    f.seek(512)
    lba, count, size = struct.unpack_from("<QII", f.read(92), 72)
    f.seek(lba * 512)
    table = f.read(count * size)
    for i in range(count):
        first, last = struct.unpack_from("<QQ", table, i * size + 32)
        if first == 0:
            continue
        f.seek(first * 512 + 1024)
        if f.read(4) == bytes.fromhex("e2e1f5e0"):
            f.seek(first * 512)
            open(out, "wb").write(f.read((last - first + 1) * 512))
            sys.exit(0)
sys.exit("no erofs partition in " + image)
"""


def test_the_installed_package_is_byte_compiled_for_the_image_python(debian13: Container) -> None:
    """Its /usr is read-only: a module without a .pyc for the image's own
    Python (3.13) would be compiled on every run of the generator and the
    CLI."""
    uncompiled = debian13.run(["python3", "-I", "-c", UNCOMPILED_MODULES, INSTALLED_PACKAGE]).stdout
    assert uncompiled == ""


def test_export_as_a_raw_image_on_systemd_257(debian13: Container) -> None:
    """export --format=raw: a DDI as systemd-repart's sysext definitions make
    it, whose root file system holds the overlay's files and its release file.
    (systemd-sysext merge of a raw image needs loop devices, which the
    container does not have: the directory format's merge is tested on the
    252 test bed, tests/test_diff_export.py.)"""
    bed = debian13
    bed.sdoverlay("unlock", "/usr/share/doc", "--name", "ex", check=True)
    bed.sh("echo new > /usr/share/doc/new.txt && mkdir /usr/share/doc/made && echo deep > /usr/share/doc/made/f")
    outcome = json.loads(bed.sdoverlay("export", "ex", "/var/lib/extensions/ex.raw", "--format=raw", "--json",
                                       check=True).stdout)
    assert outcome["format"] == "raw" and outcome["extension"] == "ex" and outcome["paths"] == 3
    assert bed.sh("ls -A /var/lib/extensions").stdout == "ex.raw\n"  # its tree is gone
    bed.run(["python3", "-c", EROFS_ROOT_OF_DDI, "/var/lib/extensions/ex.raw", "/tmp/root.erofs"])
    bed.run(["fsck.erofs", "--extract=/tmp/root", "/tmp/root.erofs"])
    assert bed.sh("cat /tmp/root/usr/share/doc/new.txt /tmp/root/usr/share/doc/made/f").stdout == "new\ndeep\n"
    release = bed.sh("cat /tmp/root/usr/lib/extension-release.d/extension-release.ex").stdout
    assert release.startswith("ID=debian\nVERSION_ID=13\n") and "ARCHITECTURE=" in release

    refused = bed.sdoverlay("export", "ex", "/var/lib/extensions/ex2", "--format=raw")
    assert refused.returncode == 2 and refused.stderr == (
        "sdoverlay: cannot export to /var/lib/extensions/ex2: a raw image's name ends in .raw\n")
    bed.sdoverlay("remove", "ex", check=True)


def test_hotfix_through_the_installed_generator_on_systemd_257(debian13: Container) -> None:
    """unlock --hotfix writes a drop-in and reloads: the installed generator
    (a sh loop, then the image's python3) makes the overlay's units, its
    content unit an instance of the generated template, on systemd 257."""
    bed = debian13
    assert bed.sh("ls -A /run/systemd/generator | grep -c overlay || true").stdout == "0\n"  # no drop-in yet
    bed.sdoverlay("unlock", "/usr/share/man", "--hotfix", check=True)
    bed.sh("echo fix > /usr/share/man/fix.txt")
    assert bed.run(["cat", "/var/lib/sdoverlay/usr-share-man/upper/fix.txt"]).stdout == "fix\n"
    content_unit = "usroverlay-content@usr-share-man.service"
    assert bed.run(["systemctl", "show", "-P", "FragmentPath", content_unit]).stdout == (
        "/run/systemd/generator/usroverlay-content@.service\n")
    assert bed.run(["systemctl", "is-active", content_unit, "usr-share-man.mount"]).stdout.split() == ["active"] * 2
    entry = json.loads(bed.sdoverlay("list", "--json", check=True).stdout)[0]
    assert entry["units"] == ["run-usroverlay-usr\\x2dshare\\x2dman.mount", content_unit, "usr-share-man.mount"]
    bed.sdoverlay("remove", "usr-share-man", check=True)
    assert bed.sh("systemctl list-units --all --no-legend '*usroverlay*' '*content*'").stdout == ""
    assert bed.run(["test", "-e", "/etc/sdoverlay.d/usr-share-man.conf"], check=False).returncode == 1


def test_installed_bash_completion_completes_overlay_names(debian13: Container) -> None:
    from tests.test_conventions import bash_completions

    bed = debian13
    for name, target in (("alpha", "/usr/share/doc"), ("also", "/usr/share/man"), ("beta", "/usr/share/info")):
        bed.sdoverlay("unlock", target, "--name", name, "-q", check=True)
    for path in ("/usr/share/zsh/vendor-completions/_sdoverlay", "/usr/share/fish/vendor_completions.d/sdoverlay.fish"):
        assert "_SDOVERLAY_COMPLETE" in bed.run(["cat", path]).stdout
    found = bash_completions(bed, "/usr/share/bash-completion/completions/sdoverlay", "/usr/bin/sdoverlay")
    assert found == {"verbs": ["remove", "reset"], "options": ["--json"], "names": ["alpha", "also", "beta"],
                     "some": ["alpha", "also"]}
