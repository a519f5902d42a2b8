"""The user story on a second real OS: Debian 13, systemd 257, Python 3.13,
sdoverlay installed in the image's /usr by `make install` (tests/image.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_test_bed
from tests.image import image
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
