"""Why a unit failed: its own log lines and the kernel's overlayfs messages.

mount(8) on Debian 12 (util-linux 2.38) only says "wrong fs type, bad
option, ..."; the reason ("overlay: Unknown parameter ...") is in the kernel
log. Both are gathered so the user sees the real cause in one line.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
import time

from systemd import journal

_SYSLOG_ACTION_READ_ALL = 3
_SYSLOG_ACTION_SIZE_BUFFER = 10
_KMSG_LINE = re.compile(r"<\d+>\[\s*(\d+\.\d+)\]\s(.*)")
_MOUNT_TOOLS = {"mount", "umount", "sdoverlay-populate"}
# systemd's messages that carry a reason, not only the fact of a failure.
_SYSTEMD_REASON = re.compile(
    r"code=\w+, status=\d+/\S+|Failed at step|Failed to (?!start |mount |unmount |stop |activate )|"
    r"Failed with result '(?!exit-code|resources)|timed out|Killing process|Unit .* not found"
)


def kernel_overlay_messages(since_monotonic: float) -> list[str]:
    """Kernel log lines from overlayfs since the given CLOCK_MONOTONIC time."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    size = libc.klogctl(_SYSLOG_ACTION_SIZE_BUFFER, None, 0)
    if size <= 0:
        return []
    buffer = ctypes.create_string_buffer(size)
    length = libc.klogctl(_SYSLOG_ACTION_READ_ALL, buffer, size)
    if length <= 0:  # no CAP_SYSLOG with dmesg_restrict: nothing to add
        return []
    lines = []
    for line in buffer.raw[:length].decode(errors="replace").splitlines():
        match = _KMSG_LINE.match(line)
        # printk time is local_clock(), close to CLOCK_MONOTONIC; allow slack.
        if match and float(match.group(1)) >= since_monotonic - 1.0:
            text = match.group(2)
            if text.startswith(("overlay:", "overlayfs:")):
                lines.append(text)
    return lines


def unit_log_errors(unit: str, since_realtime: float, wait: float = 1.0) -> list[str]:
    """Lines that mount/umount wrote for UNIT since the given time.

    journald may still be reading the process's output when the job has
    already failed, so wait up to WAIT seconds for the first line.
    """
    reader = journal.Reader()
    reader.this_boot()
    reader.add_match(_SYSTEMD_UNIT=unit)
    reader.add_disjunction()
    reader.add_match(UNIT=unit)
    deadline = time.monotonic() + wait
    found: list[str] = []
    while True:
        reader.seek_realtime(since_realtime)
        entries = [entry for entry in reader if isinstance(entry.get("MESSAGE"), str) and entry["MESSAGE"]]
        found = [entry["MESSAGE"] for entry in entries if entry.get("SYSLOG_IDENTIFIER") in _MOUNT_TOOLS]
        if not found:  # the tool did not run, or said nothing: systemd's own reason
            found = [entry["MESSAGE"] for entry in entries if _systemd_says_why(entry)]
        if found or time.monotonic() >= deadline:
            return found
        reader.wait(0.1)


def _systemd_says_why(entry: dict) -> bool:
    """systemd's own reason for a unit's failure, where the unit's program
    said nothing: "Main process exited, code=exited, status=219/CGROUP",
    "Failed at step CGROUP spawning ..." (issue 7, item 11: a cgroup failure
    was reported as a bare "failed (exit-code)")."""
    return entry.get("SYSLOG_IDENTIFIER") == "systemd" and bool(_SYSTEMD_REASON.search(entry["MESSAGE"]))


def explain(unit: str, result: str, since_realtime: float, since_monotonic: float) -> str:
    """One line: the unit's Result plus whatever the logs say about it."""
    messages = unit_log_errors(unit, since_realtime) + kernel_overlay_messages(since_monotonic)
    details = [
        line.strip().rstrip(".")
        for message in messages
        for line in message.splitlines()
        # mount(8)'s standard pointer to dmesg: the kernel's line is included instead.
        if line.strip() and not line.strip().startswith("dmesg(1)")
    ]
    text = f"{unit} failed ({result})"
    if details:
        text += ": " + "; ".join(details)
    return text
