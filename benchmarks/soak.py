"""Soak: many apply / write / reset / remove cycles in one container.

Counts what each hundred cycles leaves behind (units, mounts, area dirs,
tmpfs memory) and the wall time per cycle of each hundred, next to a
reference run in the same container: `systemd-mount` + `systemd-umount` of
an overlay of the same shape, so that drift in the machine shows on both.

    sudo .venv/bin/python benchmarks/soak.py [--cycles 300] [--reference-every 10]
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
mkdir -p /srv/src /srv/ref
for i in $(seq 20); do echo "file $i" > /srv/src/f$i; done
"""
CYCLE = f"""
{SDOVERLAY} apply soak /srv/src /usr/share/doc >/dev/null
head -c 1M /dev/urandom > /usr/share/doc/written
{SDOVERLAY} reset soak >/dev/null
test ! -e /usr/share/doc/written
{SDOVERLAY} remove soak >/dev/null
"""
REFERENCE = """
# The stopped transient mount unit of the last remove must be gone first.
while systemctl list-units --all --no-legend usr-share-doc.mount | grep -q .; do sleep 0.01; done
mkdir -p /srv/ref/u /srv/ref/w
systemd-mount -q --type=overlay \
  --options=lowerdir=/srv/src:/usr/share/doc,upperdir=/srv/ref/u,workdir=/srv/ref/w,index=off,metacopy=off \
  /srv/src /usr/share/doc
head -c 1M /dev/urandom > /usr/share/doc/written
systemd-umount -q /usr/share/doc
rm -rf /srv/ref/u /srv/ref/w
"""
# What is left after a cycle: our units in any state, overlay and area
# mounts, area dirs, and the kernel's shared memory (tmpfs pages).
LEAKS = r"""
echo units=$(systemctl list-units --all --plain --no-legend '*usroverlay*' | wc -l)
echo mounts=$(findmnt -rn -o TARGET | grep -c -e '^/run/usroverlay' -e '^/usr/share/doc$')
echo dirs=$(ls -A /run/usroverlay 2>/dev/null | wc -l)
# Shmem counts every tmpfs of the host, the container's journal too (in
# /var/log/journal on the container's tmpfs /var): that grows with every
# line logged, so it is taken off.
journal=$(du -sk /run/log/journal /var/log/journal 2>/dev/null | cut -f1 | paste -sd+ | sed 's/^$/0/')
echo shmem_kib=$(( $(sed -n 's/^Shmem: *\([0-9]*\) kB/\1/p' /proc/meminfo) - ($journal) ))
echo journal_kib=$(( $journal ))
"""


def leaks(bed: Container) -> dict[str, int]:
    return {key: int(value) for key, value in (line.split("=") for line in bed.sh(LEAKS).stdout.split())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=300)
    parser.add_argument("--reference-every", type=int, default=10)
    args = parser.parse_args()
    with Container() as bed:
        bed.sh(PREPARE)
        start = leaks(bed)
        print(f"start: {start}")
        ours: list[float] = []
        reference: list[float] = []
        failures = 0
        for cycle in range(1, args.cycles + 1):
            began = time.perf_counter()
            if bed.sh(CYCLE, check=False).returncode != 0:
                failures += 1
            ours.append(time.perf_counter() - began)
            if cycle % args.reference_every == 0:
                began = time.perf_counter()
                bed.sh(REFERENCE)
                reference.append(time.perf_counter() - began)
            if cycle % 100 == 0:
                now = leaks(bed)
                hundred = ours[-100:]
                refs = reference[-(100 // args.reference_every):]
                print(
                    f"cycles {cycle - 99:4d}-{cycle:4d}: sdoverlay median {statistics.median(hundred) * 1000:6.0f} ms "
                    f"(p90 {sorted(hundred)[89] * 1000:6.0f}), reference median {statistics.median(refs) * 1000:6.0f} ms, "
                    f"ratio {statistics.median(hundred) / statistics.median(refs):.2f}x; "
                    f"left: units {now['units']}, mounts {now['mounts']}, dirs {now['dirs']}, "
                    f"shmem {now['shmem_kib'] - start['shmem_kib']:+d} KiB (journal {now['journal_kib']} KiB apart)"
                )
        end = leaks(bed)
        print(f"end: {end}; failed cycles: {failures}")


if __name__ == "__main__":
    main()
