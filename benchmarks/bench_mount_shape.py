"""What one mount per overlay would save against today's two (issue 9).

Every overlay is two mounts, its area's tmpfs and the overlay: two mount
events for each new one, and two mount table lines for each one present,
which PID 1 parses on every event. This boots three test beds side by side
(cgroups of their own): one without overlays, one with 300 made by hand as
sdoverlay makes them (a tmpfs and an overlay each), one with 300 made as one
mount each (upper and work dirs on /run itself, no tmpfs of their own).
In each, interleaved, it mounts one more overlay on PROBE_TARGET with
systemd's `systemd-mount` in each shape (SHAPES), and reads the wall time and PID
1's CPU time (/proc/PID/schedstat). Ratios are against the bed without
overlays, paired round by round. benchmarks/README.md, in this script's
section, says why sdoverlay does not make that shape.

    sudo .venv/bin/python benchmarks/bench_mount_shape.py [--rounds 11] [--present 300]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_scale import PROBE_TARGET, QUIET, REFERENCE_DOWN, REFERENCE_UP, paired  # noqa: E402
from tests.testbed import Container  # noqa: E402

# The one-mount shape of bench_scale's reference: the overlay alone, its
# upper and work dirs on /run's own tmpfs.
ONE_MOUNT_UP = ["sh", "-ec", "mkdir -p /run/refone/u /run/refone/w; "
                f"systemd-mount -q --type=overlay --options=lowerdir={PROBE_TARGET},upperdir=/run/refone/u,"
                f"workdir=/run/refone/w,index=off,metacopy=off /run/refone {PROBE_TARGET}"]
ONE_MOUNT_DOWN = ["sh", "-ec", f"systemd-umount -q {PROBE_TARGET}; rm -rf /run/refone"]
# Today's two mounts, then the area unmounted: the overlay keeps a private
# clone of it (a process would hold one too, open_tree(OPEN_TREE_CLONE), to
# reach the upper dir: not needed to time the mount table's part).
AREA_LET_GO_UP = [*REFERENCE_UP[:-1], REFERENCE_UP[-1] + "; umount /run/refarea"]
AREA_LET_GO_DOWN = ["sh", "-ec", f"systemd-umount -q {PROBE_TARGET}"]
SHAPES = {"two mounts (today)": (REFERENCE_UP, REFERENCE_DOWN), "one mount": (ONE_MOUNT_UP, ONE_MOUNT_DOWN),
          "two mounts, the area then unmounted": (AREA_LET_GO_UP, AREA_LET_GO_DOWN)}


def make_overlays(bed: Container, count: int, own_tmpfs: bool) -> None:
    """COUNT overlays on dirs of /usr/share/doc (not symlinks), with mount(8):
    each upper on a tmpfs of its own (OWN_TMPFS, as sdoverlay's areas) or on
    /run. Then waits out systemd's reading of the new mount table."""
    area = ('mount -t tmpfs -o size=1m,mode=0700 tmpfs "$a"; ' if own_tmpfs else "")
    bed.run(["sh", "-ec",
             'i=0; for d in /usr/share/doc/*; do [ -d "$d" ] && [ ! -L "$d" ] || continue; '
             '[ "$i" -lt "$1" ] || break; i=$((i+1)); a=/run/shape/$i; mkdir -p "$a"; ' + area +
             'mkdir "$a/u" "$a/w"; '
             'mount -t overlay overlay -o "lowerdir=$d,upperdir=$a/u,workdir=$a/w,index=off,metacopy=off" "$d"; done; '
             '[ "$i" -eq "$1" ]', "sh", str(count)])
    time.sleep(3)


def one_more(bed: Container, up: list[str], down: list[str]) -> tuple[float, float]:
    """Wall and PID 1 CPU ms of UP, after a quiet second (systemd's mountinfo
    rate limit); PID 1's CPU is read 0.3 s after, when it has seen the mounts."""
    time.sleep(QUIET)
    cpu = bed.pid1_cpu_ms()
    start = time.perf_counter()
    bed.run(up)
    wall = (time.perf_counter() - start) * 1000
    time.sleep(0.3)
    cpu = bed.pid1_cpu_ms() - cpu
    bed.run(down)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--present", type=int, default=300)
    args = parser.parse_args()
    labels = ["none", f"{args.present} as two mounts each (today)", f"{args.present} as one mount each"]
    with Container(own_cgroup=True) as none, Container(own_cgroup=True) as two, Container(own_cgroup=True) as one:
        make_overlays(two, args.present, own_tmpfs=True)
        make_overlays(one, args.present, own_tmpfs=False)
        beds = dict(zip(labels, (none, two, one)))
        for label, bed in beds.items():
            lines = bed.run(["sh", "-c", "wc -l < /proc/self/mountinfo"]).stdout.strip()
            print(f"{label}: {lines} mount table lines")
        samples: dict[tuple[str, str], list[tuple[float, float]]] = {(b, s): [] for b in beds for s in SHAPES}
        for round_number in range(args.rounds):
            order = list(beds.items()) if round_number % 2 == 0 else list(beds.items())[::-1]
            for label, bed in order:
                for shape, (up, down) in SHAPES.items():
                    samples[label, shape].append(one_more(bed, up, down))
    print(f"\none more overlay with systemd-mount, medians of {args.rounds} rounds; ratios paired with 'none'")
    for shape in SHAPES:
        print(f"{shape}:")
        reference_wall = [run[0] for run in samples[labels[0], shape]]
        reference_cpu = statistics.median(run[1] for run in samples[labels[0], shape])
        for label in labels:
            runs = samples[label, shape]
            wall, cpu = [run[0] for run in runs], [run[1] for run in runs]
            compared = "" if label == labels[0] else (
                f"  wall {paired(reference_wall, wall)[0]:.2f}x, PID 1 {statistics.median(cpu) - reference_cpu:+.1f} ms")
            print(f"  {label:32s} wall {statistics.median(wall):6.1f} ms   PID 1's CPU {statistics.median(cpu):6.1f} ms{compared}")


if __name__ == "__main__":
    main()
