"""A password prompt in a real login session: `login` on a terminal that
tmux drives (send-keys, capture-pane) inside the test bed, so that logind
makes the user a session and polkit hands the request to the CLI's
pkttyagent there.

A container has no seats: a login on a pseudo-terminal is an active
session that polkit does not count as local, so the policy's defaults
(auth_admin_keep only for a local active session) answer "no" there, as
for a session over ssh. A rule of the kind an administrator writes for
such sessions (subject.active: AUTH_ADMIN_KEEP) makes polkit ask; Debian's
admin rule (the group sudo) says whose password. Both are written to /etc:
the test bed's /usr is this host's, where /usr/share/polkit-1/rules.d
belongs to the host's polkitd uid, which the bed's polkitd does not have.
"""

from __future__ import annotations

import subprocess
import time

from tests.test_overlays import snapshot
from tests.testbed import Container

PASSWORD = "s3cret-Pass"
CAROL = 1002  # in group sudo: an administrator as polkit sees one
DAVE = 1003  # in no group
SESSION_SETUP = """
echo 'carol:x:1002:1002:Carol:/home/carol:/bin/sh' >> /etc/passwd
echo 'dave:x:1003:1003:Dave:/home/dave:/bin/sh' >> /etc/passwd
printf 'carol:{hash}:19000:0:99999:7:::\\ndave:{hash}:19000:0:99999:7:::\\n' >> /etc/shadow
sed -i 's/^sudo:x:27:$/sudo:x:27:carol/' /etc/group && grep -q '^sudo:x:27:carol$' /etc/group
printf 'carol:x:1002:\\ndave:x:1003:\\n' >> /etc/group
mkdir -p /home/carol /home/dave /etc/pam.d /etc/polkit-1/rules.d
chown carol /home/carol && chown dave /home/dave
printf 'auth required pam_unix.so\\naccount required pam_unix.so\\nsession required pam_unix.so\\nsession optional pam_systemd.so\\n' > /etc/pam.d/login
printf 'auth required pam_unix.so\\naccount required pam_unix.so\\n' > /etc/pam.d/polkit-1
cat > /etc/polkit-1/rules.d/40-admin.rules <<'RULE'
polkit.addAdminRule(function(action, subject) {{ return ["unix-group:sudo"]; }});
RULE
"""
ASK_IN_ACTIVE_SESSIONS = """
cat > /etc/polkit-1/rules.d/50-active.rules <<'RULE'
polkit.addRule(function(action, subject) {
    if (action.id.indexOf("org.sdoverlay.") == 0 && subject.active) { return polkit.Result.AUTH_ADMIN_KEEP; }
    return polkit.Result.NOT_HANDLED;
});
RULE
"""


class Terminal:
    """A tmux session inside the bed, logged in as USER through login(1)."""

    def __init__(self, bed: Container, user: str) -> None:
        self.bed = bed
        self.name = user
        bed.sh(f"tmux new-session -d -s {user} -x 220 -y 50 login")
        self.wait_for("login:")
        self.send(user)
        self.wait_for("Password:")
        self.send(PASSWORD)
        self.wait_for("Password:\n$")  # the shell's prompt (capture-pane drops its trailing space)
        self.send(f"export PATH=$PATH:{bed.sdoverlay_path.rsplit('/', 1)[0]}; clear")

    def send(self, *keys: str, enter: bool = True) -> None:
        self.bed.run(["tmux", "send-keys", "-t", self.name, "-l", " ".join(keys)])
        if enter:
            self.bed.run(["tmux", "send-keys", "-t", self.name, "Enter"])

    def key(self, key: str) -> None:
        self.bed.run(["tmux", "send-keys", "-t", self.name, key])

    def screen(self) -> str:
        return self.bed.run(["tmux", "capture-pane", "-p", "-t", self.name]).stdout

    def wait_for(self, text: str, count: int = 1, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if screen.count(text) >= count:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} x{count} not on the screen of {self.name}:\n{self.screen()}")

    def run(self, command: str) -> str:
        """COMMAND, then its exit status printed: the screen once it is there."""
        marker = f"exit={time.monotonic_ns()}"
        self.send(f"clear; {command}; echo {marker}=$?")
        return self.wait_for(f"{marker}=")


def _setup(bed: Container, ask: bool) -> None:
    hashed = subprocess.run(["openssl", "passwd", "-6", PASSWORD], capture_output=True, text=True,
                            check=True).stdout.strip()
    bed.sh(SESSION_SETUP.format(hash=hashed) + (ASK_IN_ACTIVE_SESSIONS if ask else ""))


def sessions(bed: Container) -> list[str]:
    return bed.run(["loginctl", "list-sessions", "--no-legend"]).stdout.split("\n")


def test_a_password_prompt_in_a_login_session(bed: Container) -> None:
    _setup(bed, ask=True)
    carol = Terminal(bed, "carol")
    assert any(" carol " in line and "pts/" in line for line in sessions(bed)), sessions(bed)
    before = snapshot(bed)
    # A wrong password: exit 5, one line, nothing created.
    carol.send("clear; sdoverlay unlock /usr/share/man; echo exit=$?")
    carol.wait_for("Password:")
    assert "Authenticating as: Carol (carol)" in carol.screen()
    carol.send("wrong")
    screen = carol.wait_for("exit=")
    assert "exit=5" in screen and "sdoverlay: uid 1002 may not do this: polkit action org.sdoverlay.create" in screen
    assert snapshot(bed) == before
    # Ctrl-C at the prompt: nothing left.
    carol.send("clear; sdoverlay unlock /usr/share/man; echo exit=$?")
    carol.wait_for("Password:")
    carol.key("C-c")
    screen = carol.wait_for("exit=")
    assert "exit=0" not in screen, screen
    time.sleep(1)
    assert snapshot(bed) == before
    # --no-ask-password never asks.
    screen = carol.run("sdoverlay unlock /usr/share/man --no-ask-password")
    assert "Password:" not in screen and "=5" in screen, screen
    assert snapshot(bed) == before
    # The right password creates it.
    carol.send("clear; sdoverlay unlock /usr/share/man; echo exit=$?")
    carol.wait_for("Password:")
    carol.send(PASSWORD)
    screen = carol.wait_for("exit=")
    assert "exit=0" in screen and "unlocked overlay 'usr-share-man'" in screen, screen
    bed.sdoverlay("remove", "--force", "usr-share-man", check=True)
    # auth_admin_keep: polkit keeps the authorization for the process that
    # asked (polkitbackendinteractiveauthority.c stores a bus name's
    # process), so one command's further calls do not ask again: one
    # password removes both of root's overlays.
    for target in ("/usr/share/man", "/usr/share/info"):
        bed.sdoverlay("unlock", target, check=True)
    carol.send("clear; sdoverlay remove --all --force; echo exit=$?")
    carol.wait_for("Password:")
    carol.send(PASSWORD)
    screen = carol.wait_for("exit=")
    assert "exit=0" in screen and screen.count("Password:") == 1, screen
    assert "removed overlay 'usr-share-info'" in screen and "removed overlay 'usr-share-man'" in screen, screen
    assert snapshot(bed) == before


def test_the_defaults_in_a_session_polkit_does_not_count_as_local(bed: Container) -> None:
    """Without a rule: a pseudo-terminal's session has no seat, and the
    defaults' allow_any is no, for an administrator and anyone else."""
    _setup(bed, ask=False)
    before = snapshot(bed)
    for user in ("carol", "dave"):
        terminal = Terminal(bed, user)
        screen = terminal.run("sdoverlay unlock /usr/share/man")
        assert "Password:" not in screen and "=5" in screen, screen
        assert "polkit action org.sdoverlay.create: not allowed" in screen, screen
    assert snapshot(bed) == before
