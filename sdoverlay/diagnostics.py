"""Why a unit failed: its own log lines and the kernel's overlayfs messages.

mount(8) on Debian 12 (util-linux 2.38) only says "wrong fs type, bad
option, ..."; the reason ("overlay: Unknown parameter ...") is in the kernel
log. Both are gathered so the user sees the real cause in one line.
"""

from __future__ import annotations

import ctypes
import re
import time
from typing import NamedTuple

from systemd import journal

from sdoverlay import paths

# The process's own symbols include libc's; ctypes.util.find_library("c")
# would run ldconfig in a subprocess on every operation.
_LIBC = ctypes.CDLL(None, use_errno=True)
_SYSLOG_ACTION_READ_ALL = 3
_SYSLOG_ACTION_SIZE_BUFFER = 10
# Room for several records (one is at most 1 KiB, LOG_LINE_MAX), so the
# newest always fits.
_NEWEST_RECORDS = 8192
_KMSG_LINE = re.compile(r"<\d+>\[\s*(\d+\.\d+)\]\s(.*)")
_MOUNT_TOOLS = {"mount", "umount", "sdoverlay-populate"}
# systemd's messages that carry a reason, not only the fact of a failure.
_SYSTEMD_REASON = re.compile(
    r"code=\w+, status=\d+/\S+|Failed at step|Failed to (?!start |mount |unmount |stop |activate )|"
    r"Failed with result '(?!exit-code|resources)|timed out|Killing process|Unit .* not found"
)


class LogPoint(NamedTuple):
    """Where the logs stood when an operation started: what they say later
    than this is about the operation.

    The kernel's place is the stamp of its newest record, not a clock
    reading: printk stamps are local_clock(), which is not NTP-slewed like
    CLOCK_MONOTONIC and drifts from it over an uptime. A one-second window
    on CLOCK_MONOTONIC attached a failed mount's "overlayfs: ..." line,
    logged by the test before, to the next operation's copy failure (a CI
    failure, tests/test_overlays.py).
    """

    realtime: float
    # None: the kernel's lines are not asked for (or cannot be read here).
    kernel_stamp: float | None
    # The dirs of the overlay being mounted (its target, its area, ...): a
    # kernel line that quotes paths, none of them within these, is about
    # another mount made meanwhile (another shell's), not this one.
    overlay_dirs: tuple[str, ...] = ()

    def without_kernel(self) -> LogPoint:
        return LogPoint(self.realtime, None)


def log_point(mounting: tuple[str, ...] | None = None) -> LogPoint:
    """The logs' place now; for an operation that mounts an overlay whose
    dirs are MOUNTING, the kernel log's too: only overlayfs itself says why
    a mount failed. That costs 1.2-1.5 ms here (klogctl walks the whole
    ring, 1,500 records), so operations that mount nothing do without it."""
    if mounting is None:
        return LogPoint(time.time(), None)
    return LogPoint(time.time(), _newest_kernel_stamp(), mounting)


def _read_kernel_log(size: int) -> list[str] | None:
    """The kernel log's newest records that fit in SIZE bytes, a line each;
    None where it cannot be read (no CAP_SYSLOG under dmesg_restrict)."""
    buffer = ctypes.create_string_buffer(size)
    # SYSLOG_ACTION_READ_ALL copies the newest records that fit (kernel/printk/printk.c, syslog_print_all).
    length = _LIBC.klogctl(_SYSLOG_ACTION_READ_ALL, buffer, size)
    if length < 0:
        return None
    return buffer.raw[:length].decode(errors="replace").splitlines()


def _newest_kernel_stamp() -> float | None:
    lines = _read_kernel_log(_NEWEST_RECORDS)
    if lines is None:
        return None
    for line in reversed(lines):
        match = _KMSG_LINE.match(line)
        if match:
            return float(match.group(1))
    # An empty log: anything is newer. Records but no stamps (printk.time=0):
    # nothing can be placed, and 0.0 would match nothing anyway.
    return 0.0


def kernel_overlay_messages(since: LogPoint) -> list[str]:
    """The kernel's overlayfs lines logged after SINCE, if it has a kernel place."""
    if since.kernel_stamp is None:
        return []
    size = _LIBC.klogctl(_SYSLOG_ACTION_SIZE_BUFFER, None, 0)
    records = _read_kernel_log(size) if size > 0 else None
    lines = []
    for line in records or []:
        match = _KMSG_LINE.match(line)
        if match and float(match.group(1)) > since.kernel_stamp:
            text = match.group(2)
            if text.startswith(("overlay:", "overlayfs:")) and _may_be_about(text, since.overlay_dirs):
                lines.append(text)
    return lines


# overlayfs quotes the paths it was given: "failed to resolve '/x': -2",
# "fs on '/x' does not support file handles" (fs/overlayfs/super.c).
_QUOTED_PATH = re.compile(r"'(/[^']*)'")


def _may_be_about(line: str, overlay_dirs: tuple[str, ...]) -> bool:
    """Can kernel LINE be about the overlay with OVERLAY_DIRS? Not if it
    quotes paths and none of them lies within those dirs; a line that
    quotes none ("maximum fs stacking depth exceeded") may be."""
    quoted = _QUOTED_PATH.findall(line)
    return not quoted or any(paths.is_within(path, directory) for path in quoted for directory in overlay_dirs)


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


def explain(unit: str, result: str, since: LogPoint) -> str:
    """One line: the unit's Result plus whatever the logs said about it after SINCE."""
    messages = unit_log_errors(unit, since.realtime) + kernel_overlay_messages(since)
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
    if any(STACKING_LINE in line for line in details):
        text += "; " + STACKING_LIMIT
    return text


# What overlayfs logs when a layer is stacked too deep (fs/overlayfs/super.c).
STACKING_LINE = "maximum fs stacking depth exceeded"
STACKING_LIMIT = (
    "the kernel stacks at most 2 file systems (FILESYSTEM_MAX_STACK_DEPTH, include/linux/fs.h), and the target's is "
    "stacked already: it is an overlay or lies on one (a composefs root, systemd-sysext's merged /usr, an overlay "
    "made by hand); overlay a dir whose file system is not"
)
