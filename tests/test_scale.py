"""Issue 9: what sdoverlay asks of systemd does not grow with the number of
overlays. D-Bus method calls to PID 1 are counted on the real bus with
`busctl monitor` while each command runs. (Timings are in benchmarks/, not
here.)"""

from __future__ import annotations

import collections
import json
import time

from tests.testbed import SDOVERLAY, Container

MONITOR = "/tmp/systemd-calls.json"


def systemd_calls(bed: Container, *args: str) -> int:
    """Method calls to org.freedesktop.systemd1 while `sdoverlay ARGS` runs,
    from the one connection that made the most (the CLI, or the service)."""
    bed.sh(f"busctl monitor --json=short org.freedesktop.systemd1 > {MONITOR} 2>/dev/null & "
           "echo $! > /tmp/monitor.pid")
    time.sleep(1.0)  # the monitor is in place (it says nothing until a message comes)
    result = bed.run([SDOVERLAY, *args], check=False)
    assert result.returncode == 0, result.stderr
    time.sleep(0.5)
    bed.sh("kill $(cat /tmp/monitor.pid); sleep 0.2")
    messages = [json.loads(line) for line in bed.sh(f"cat {MONITOR}").stdout.splitlines() if line.startswith("{")]
    calls = collections.Counter(message["sender"] for message in messages
                                if message.get("type") == "method_call"
                                and message.get("destination") == "org.freedesktop.systemd1")
    return max(calls.values()) if calls else 0


def test_systemd_calls_do_not_grow_with_the_number_of_overlays(bed: Container) -> None:
    bed.sh("mkdir -p /srv/src && echo applied > /srv/src/f")
    targets = sorted(bed.sh("find /usr/share -mindepth 1 -maxdepth 1 -type d ! -name doc ! -name man").stdout.split())[:8]
    assert len(targets) == 8, targets
    probe = [("list", "--json"), ("apply", "probe", "/srv/src", "/usr/share/doc"), ("reset", "probe"),
             ("unlock", "/usr/share/man", "--name", "probe2"), ("remove", "probe"), ("remove", "probe2")]
    counts = {}
    for present in (1, 8):
        while len(json.loads(bed.sdoverlay("list", "--json", check=True).stdout)) < present:
            index = len(json.loads(bed.sdoverlay("list", "--json", check=True).stdout))
            bed.sdoverlay("unlock", targets[index], "--name", f"o{index}", check=True)
        counts[present] = [systemd_calls(bed, *args) for args in probe]
    assert all(count > 0 for count in counts[1]), counts
    print("systemd method calls per command", dict(zip([" ".join(a) for a in probe], counts[1])))
    assert counts[1] == counts[8], counts
