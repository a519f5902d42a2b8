"""Wall time of sdoverlay's verbs next to systemd's own tools, in one container.

Ratios, not absolute times: every figure is compared with a reference run
in the same invocation on the same machine.

    sudo .venv/bin/python benchmarks/bench_cli.py [--rounds N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.testbed import SDOVERLAY, Container  # noqa: E402

PREPARE = """
mkdir -p /srv/src /srv/ref/u /srv/ref/w
for i in $(seq 100); do echo "file $i" > /srv/src/f$i; done
"""
# A comparable mount by systemd's own tool: an overlay with the same layers
# shape (content copy excluded) as a transient mount unit, waited for.
REF_MOUNT = [
    "systemd-mount", "--type=overlay",
    "--options=lowerdir=/srv/src:/usr/share/doc,upperdir=/srv/ref/u,workdir=/srv/ref/w,index=off,metacopy=off",
    # systemd-mount takes a non-API file system's source as a path; overlayfs ignores it.
    "/srv/src", "/usr/share/doc",
]
REF_UMOUNT = ["systemd-umount", "/usr/share/doc"]


# systemd (252) rate-limits its reading of /proc/self/mountinfo to a burst of
# 5 events a second (src/core/mount.c; systemd issue #20329): a mount job
# finishes only once systemd has seen the mount, so back-to-back mounts wait
# up to a second. Each command starts after a quiet second, so that neither
# side is measured against the other's rate-limit debt.
QUIET = 1.1


def timed(bed: Container, argv: list[str]) -> float:
    time.sleep(QUIET)
    start = time.perf_counter()
    bed.run(argv)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    samples: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        samples.setdefault(key, []).append(value)

    with Container() as bed:
        bed.sh(PREPARE)
        for _ in range(rounds):
            add("nsenter true (harness floor)", timed(bed, ["true"]))
            add("python3 -I -c pass", timed(bed, ["/usr/bin/python3", "-I", "-c", "pass"]))
            add("systemd-mount overlay", timed(bed, REF_MOUNT))
            add("systemd-umount", timed(bed, REF_UMOUNT))
            bed.sh("rm -rf /srv/ref/u /srv/ref/w; mkdir -p /srv/ref/u /srv/ref/w")
            add("systemctl list-units", timed(bed, ["systemctl", "list-units", "--no-pager", "*usroverlay*"]))
            add("sdoverlay apply (100 files)", timed(bed, [SDOVERLAY, "apply", "bench", "/srv/src", "/usr/share/doc"]))
            add("sdoverlay list", timed(bed, [SDOVERLAY, "list"]))
            add("sdoverlay reset", timed(bed, [SDOVERLAY, "reset", "bench"]))
            add("sdoverlay remove", timed(bed, [SDOVERLAY, "remove", "bench"]))
            add("sdoverlay --version (startup)", timed(bed, [SDOVERLAY, "--version"]))

    median = {key: statistics.median(values) for key, values in samples.items()}
    print(f"median wall time over {rounds} rounds, each command run through nsenter into one container\n")
    for key, value in median.items():
        print(f"{key:34s} {value * 1000:8.1f} ms")
    print("\nratios (same run):")
    for ours, reference in (
        ("sdoverlay apply (100 files)", "systemd-mount overlay"),
        ("sdoverlay remove", "systemd-umount"),
        ("sdoverlay list", "systemctl list-units"),
        ("sdoverlay --version (startup)", "python3 -I -c pass"),
    ):
        print(f"{ours} / {reference}: {median[ours] / median[reference]:.2f}x")


if __name__ == "__main__":
    main()
