"""Who an overlay is for: the user behind sudo/pkexec, and their login session."""

from __future__ import annotations

import os
import re

from systemd import login

_SESSION_SCOPE = re.compile(r"/session-([A-Za-z0-9]+)\.scope(?:/|$)")


def caller_uid() -> int:
    """The invoking user: the one behind sudo/pkexec when root acts for them, else the caller."""
    if os.getuid() == 0:
        for variable in ("SUDO_UID", "PKEXEC_UID"):
            value = os.environ.get(variable, "")
            if value.isdigit():
                return int(value)
    return os.getuid()


def session_id(cgroup_text: str | None = None) -> str:
    """The logind session this process runs in, or "" when there is none.

    python-systemd has no sd_pid_get_session(); like it, read the session
    scope from our cgroup (sudo keeps the caller's session scope), then
    check that logind knows the session.
    """
    if cgroup_text is None:
        try:
            with open("/proc/self/cgroup", encoding="utf-8") as file:
                cgroup_text = file.read()
        except OSError:
            return ""
    match = _SESSION_SCOPE.search(cgroup_text)
    if not match:
        return ""
    return match.group(1) if match.group(1) in login.sessions() else ""
