"""Why an overlay's metadata is not in its area's mount options (issue 9).

mount(8) keeps x-* mount options in libmount's /run/mount/utab, and systemd
(252: mount_load_proc_self_mountinfo, through mnt_table_parse_mtab) and every
mount(8) read it and merge it into the mount table on each mount change.
This measures what 300 utab entries cost every later mount: `unlock` +
`remove` of one overlay and systemd's own `systemd-mount` + `systemd-umount`
of the same shape, with none present, with 300 tmpfs + overlay mounts made
by mount(8) without user options (no utab), and with the same 300 mounts
whose tmpfs carry x-* options as sdoverlay's areas once did (300 utab
entries). sdoverlay sees none of the 300 as its own (they are not under
/run/usroverlay), so only the mount table differs.

    sudo .venv/bin/python benchmarks/bench_utab.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_scale import PROBE_TARGET, QUIET, REFERENCE_DOWN, REFERENCE_UP, timed  # noqa: E402
from tests.testbed import SDOVERLAY, Container  # noqa: E402

MOUNTS = 300
COMMANDS = {
    "unlock": [SDOVERLAY, "unlock", PROBE_TARGET, "--name", "probe"],
    "remove": [SDOVERLAY, "remove", "probe"],
    "systemd-mount": REFERENCE_UP,
    "systemd-umount": REFERENCE_DOWN,
}


def mount_script(targets: list[str], tmpfs_options: str) -> str:
    return "\n".join(
        f"mkdir -p /run/plain/{index}; mount -t tmpfs -o mode=0700,size=64M{tmpfs_options.format(index=index)} "
        f"tmpfs /run/plain/{index}; mkdir /run/plain/{index}/u /run/plain/{index}/w; "
        f"mount -t overlay -o lowerdir={target},upperdir=/run/plain/{index}/u,workdir=/run/plain/{index}/w,"
        f"index=off,metacopy=off overlay {target}"
        for index, target in enumerate(targets))


def medians(bed: Container, rounds: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {key: [] for key in COMMANDS}
    for _ in range(rounds):
        for key, argv in COMMANDS.items():
            samples[key].append(timed(bed, argv, QUIET))
    return {key: statistics.median(values) * 1000 for key, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with Container() as bed:
        targets = sorted(bed.sh("find /usr/share/doc -mindepth 1 -maxdepth 1 -type d").stdout.split())[:MOUNTS]
        results = {"none present": medians(bed, args.rounds)}
        bed.sh(mount_script(targets, ""))
        time.sleep(3)  # systemd reads mountinfo at most 5 times a second
        assert "/run/plain" not in bed.sh("cat /run/mount/utab 2>/dev/null || true").stdout
        results[f"{MOUNTS} mounts, no utab"] = medians(bed, args.rounds)
        bed.sh("\n".join(f"umount {target}; umount /run/plain/{index}" for index, target in enumerate(targets)))
        bed.sh(mount_script(targets, ",x-sdoverlay.name=o{index},x-sdoverlay.owner-uid=0,"
                                     "x-sdoverlay.created=2026-11-27T00:00:00Z"))
        time.sleep(3)
        utab_entries = bed.sh("grep -c /run/plain /run/mount/utab").stdout.strip()
        assert utab_entries == str(MOUNTS), utab_entries
        results[f"{MOUNTS} mounts, {MOUNTS} utab entries"] = medians(bed, args.rounds)

    base = results["none present"]
    print(f"medians of {args.rounds} rounds, each command after a quiet second\n")
    print(f"{'':34s}" + "".join(f"{key:>22s}" for key in COMMANDS))
    for label, values in results.items():
        print(f"{label:34s}" + "".join(f"{values[key]:10.1f} ms {values[key] / base[key]:5.2f}x  " for key in COMMANDS))


if __name__ == "__main__":
    main()
