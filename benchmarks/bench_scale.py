"""list and unlock with many overlays present, and start-up, in three
containers booted side by side.

Ratios within one run: `list --json` at N overlays against N = 10;
`unlock` + `remove` of one more overlay with 300 present against none,
each paired run by run with its reference in another container;
`--version`, `--help` and `list` with no overlays against `python3 -I -c pass`.

    sudo .venv/bin/python benchmarks/bench_scale.py [--rounds 7] [--most 500]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.testbed import SDOVERLAY, Container  # noqa: E402

# systemd 252 rate-limits its reading of mountinfo (5 changes a second):
# each timed command that mounts starts after a quiet second (see bench_cli.py).
QUIET = 1.1
# Before list is timed at each count: until a second passes with the
# machine's CPUs under this busy fraction, waiting at most MOST_SETTLE seconds.
QUIET_BUSY = 0.08
MOST_SETTLE = 40.0

# One more overlay, next to systemd's own tools doing the same: a tmpfs,
# its dirs and an overlay mounted with systemd-mount, both gone with systemd-umount.
PROBE_TARGET = "/usr/share/man"
REFERENCE_UP = ["sh", "-ec", "systemd-mount -q --type=tmpfs tmpfs /run/refarea; mkdir /run/refarea/u /run/refarea/w; "
                f"systemd-mount -q --type=overlay --options=lowerdir={PROBE_TARGET},upperdir=/run/refarea/u,"
                f"workdir=/run/refarea/w,index=off,metacopy=off /run/refarea {PROBE_TARGET}"]
REFERENCE_DOWN = ["sh", "-ec", f"systemd-umount -q {PROBE_TARGET}; systemd-umount -q /run/refarea"]


def timed(bed: Container, argv: list[str], quiet: float = 0.0) -> float:
    time.sleep(quiet)
    start = time.perf_counter()
    result = bed.run(argv, check=False)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return elapsed


def _cpu_times() -> tuple[int, int]:
    """(busy, all) jiffies of every CPU so far (proc(5), /proc/stat)."""
    fields = [int(field) for field in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


def settle() -> float:
    """Wait until the machine is quiet; the seconds it took. The container
    shares the host's CPUs and /proc/stat: this sees whatever keeps them busy."""
    start = time.monotonic()
    while True:
        busy_before, all_before = _cpu_times()
        time.sleep(1.0)
        busy_after, all_after = _cpu_times()
        busy = (busy_after - busy_before) / max(1, all_after - all_before)
        if busy < QUIET_BUSY or time.monotonic() - start > MOST_SETTLE:
            return time.monotonic() - start


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def paired(first: list[float], second: list[float]) -> tuple[float, float, float]:
    """The median of SECOND / FIRST, run by run, and its quartiles."""
    ratios = [b / a for a, b in zip(first, second)]
    quartiles = statistics.quantiles(ratios, n=4)
    return statistics.median(ratios), quartiles[0], quartiles[2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--most", type=int, default=500)
    args = parser.parse_args()
    rounds = args.rounds
    # Three containers at once, each in cgroups of its own: NONE (no
    # overlay: start-up, and unlock with none present), TEN (10 overlays:
    # list's reference) and MANY (10, then 100, 300, 500). Each timed run in
    # MANY is paired with the same command run right before or after it in
    # the other container: this machine has slow spells of seconds (`python3
    # -I -c pass` 11 to 19 ms, `list` at 10 overlays 57 to 95 ms within three
    # minutes), which a ratio of two blocks of runs minutes apart measured
    # as much as it measured sdoverlay (benchmarks/README.md).
    with Container(own_cgroup=True) as none, Container(own_cgroup=True) as ten, Container(own_cgroup=True) as many:
        # One target per overlay that overlaps no other: the dirs of /usr/share/doc.
        # (Real dirs: a link to another would be the same target.)
        targets = sorted(none.sh("find /usr/share/doc -mindepth 1 -maxdepth 1 -type d").stdout.split())
        if len(targets) < args.most:
            raise SystemExit(f"only {len(targets)} dirs in /usr/share/doc; use --most {len(targets)}")
        for index in range(10):
            ten.run([SDOVERLAY, "unlock", targets[index], "--name", f"o{index}"])

        startup = {"python3 -I -c pass": ["/usr/bin/python3", "-I", "-c", "pass"],
                   "sdoverlay --version": [SDOVERLAY, "--version"],
                   "sdoverlay --help": [SDOVERLAY, "--help"],
                   "sdoverlay list, no overlays": [SDOVERLAY, "list"]}
        start_samples: dict[str, list[float]] = {key: [] for key in startup}
        for _ in range(rounds * 3):
            for key, argv in startup.items():
                start_samples[key].append(timed(none, argv))

        def unlock_remove(bed: Container) -> tuple[float, float, float, float]:
            up = timed(bed, [SDOVERLAY, "unlock", PROBE_TARGET, "--name", "probe"], QUIET)
            down = timed(bed, [SDOVERLAY, "remove", "probe"], QUIET)
            return up, down, timed(bed, REFERENCE_UP, QUIET), timed(bed, REFERENCE_DOWN, QUIET)

        list_runs: dict[int, tuple[list[float], list[float]]] = {}  # count: (runs at 10, runs at count)
        settled: dict[int, float] = {}
        probe_none: list[tuple[float, float, float, float]] = []
        probe_many: list[tuple[float, float, float, float]] = []
        present = 0
        # --most below 300: a shorter run (start-up, list), without the probe at 300.
        for count in sorted({count for count in (100, 300) if count < args.most} | {args.most}):
            while present < count:
                many.run([SDOVERLAY, "unlock", targets[present], "--name", f"o{present}"])
                present += 1
            found = json.loads(many.run([SDOVERLAY, "list", "--json"]).stdout)
            assert len(found) == count and all(o["state"] == "active" for o in found)
            # Timed once the machine is quiet again after making up to 200
            # overlays in a row (journald, systemd's mount table work).
            settled[count] = settle()
            runs: tuple[list[float], list[float]] = ([], [])
            for round_number in range(rounds):  # which goes first alternates
                for side in (0, 1) if round_number % 2 == 0 else (1, 0):
                    runs[side].append(timed((ten, many)[side], [SDOVERLAY, "list", "--json"]))
            list_runs[count] = runs
            if count == 300:
                for round_number in range(rounds):
                    for bed in (none, many) if round_number % 2 == 0 else (many, none):
                        (probe_none if bed is none else probe_many).append(unlock_remove(bed))

    reference = median_ms(start_samples["python3 -I -c pass"])
    print(f"medians over {rounds} rounds ({rounds * 3} for start-up), each command through nsenter\n")
    for key, samples in start_samples.items():
        print(f"{key:30s} {median_ms(samples):7.1f} ms  {median_ms(samples) / reference:5.2f}x python3 -I -c pass")
    print("\nlist --json at N overlays against 10 in another container, paired run by run:")
    for count, (at_ten, at_count) in list_runs.items():
        ratio, low, high = paired(at_ten, at_count)
        print(f"list --json, {count:3d} overlays   {median_ms(at_count):7.1f} ms against {median_ms(at_ten):5.1f} ms: "
              f"{ratio:.2f}x paired (quartiles {low:.2f}-{high:.2f}; medians {median_ms(at_count) / median_ms(at_ten):.2f}x; "
              f"after {settled[count]:.0f} s to settle)")
    if probe_many:
        print("\nwith 300 overlays present against none in another container, paired run by run:")
    for label, index in (("unlock", 0), ("remove", 1), ("systemd-mount tmpfs + overlay", 2), ("systemd-umount both", 3)):
        if not probe_many:
            break
        none_runs = [sample[index] for sample in probe_none]
        many_runs = [sample[index] for sample in probe_many]
        ratio, low, high = paired(none_runs, many_runs)
        print(f"{label}: {median_ms(none_runs):.1f} ms with none, {median_ms(many_runs):.1f} ms with 300: "
              f"{ratio:.2f}x paired (quartiles {low:.2f}-{high:.2f}; medians {median_ms(many_runs) / median_ms(none_runs):.2f}x)")


if __name__ == "__main__":
    main()
