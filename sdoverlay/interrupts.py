"""Ctrl-C, SIGTERM and SIGHUP while a verb changes overlays.

A verb interrupted half-way would leave a half-made overlay (issue 7). Its
steps are bounded (every D-Bus call and job wait has a timeout), so the
signal is noted, said, and acted on only once the current verb has finished
or rolled back: the command then exits with the verb's own outcome.
SIGKILL cannot be deferred: what it leaves, the next verb on that name and
`sdoverlay gc` recover.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from types import FrameType

_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    received: list[int] = []

    def note(signum: int, _frame: FrameType | None) -> None:
        if not received:
            sys.stderr.write(
                f"sdoverlay: {signal.Signals(signum).name} received; finishing the current step first, "
                "so that nothing is left half-done\n"
            )
        received.append(signum)

    previous = {sig: signal.signal(sig, note) for sig in _SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
