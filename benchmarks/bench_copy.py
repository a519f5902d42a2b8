"""Applying a large SOURCE next to `cp -a` of the same tree into a tmpfs,
and the peak memory (RSS) of the CLI and of the service meanwhile. Also the
same apply for a user (root acting under sudo for uid 1000): that copy is
made with the user's rights, then walked and made root's by root.

    sudo .venv/bin/python benchmarks/bench_copy.py [--rounds 5] [--files 10000] [--megabytes 100]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.testbed import SDOVERLAY, Container  # noqa: E402

QUIET = 1.1  # systemd 252's mountinfo rate limit: see bench_cli.py

# The CLI run by a Python that reports its child's peak RSS (ru_maxrss, KiB).
MEASURED = ("import resource, subprocess, sys; "
            "code = subprocess.run(sys.argv[1:]).returncode; "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)")


def make_tree(bed: Container, files: int, megabytes: int) -> None:
    """FILES files in 100 dirs, MEGABYTES in all, from /dev/urandom."""
    size = megabytes * 1024 * 1024 // files
    bed.sh(f"""
        mkdir -p /srv/big
        head -c {megabytes * 1024 * 1024} /dev/urandom > /tmp/blob
        cd /srv/big
        for d in $(seq 0 99); do mkdir d$d; done
        /usr/bin/python3 - <<'PY'
blob = open("/tmp/blob", "rb").read()
for i in range({files}):
    with open(f"/srv/big/d{{i % 100}}/f{{i}}", "wb") as out:
        out.write(blob[i * {size}:(i + 1) * {size}])
PY
        rm /tmp/blob
    """)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--files", type=int, default=10000)
    parser.add_argument("--megabytes", type=int, default=100)
    args = parser.parse_args()
    cp_times, apply_times, user_times, cli_rss, service_rss = [], [], [], [], []
    with Container() as bed:
        make_tree(bed, args.files, args.megabytes)
        used = int(bed.sh("du -sb /srv/big | cut -f1").stdout)
        for _ in range(args.rounds):
            bed.sh("mkdir -p /run/cpref && mount -t tmpfs -o size=50% tmpfs /run/cpref")
            time.sleep(QUIET)
            start = time.perf_counter()
            bed.run(["cp", "-a", "-T", "/srv/big", "/run/cpref/content"])
            cp_times.append(time.perf_counter() - start)
            bed.sh("umount /run/cpref && rmdir /run/cpref")

            time.sleep(QUIET)
            start = time.perf_counter()
            result = bed.run(["/usr/bin/python3", "-c", MEASURED, SDOVERLAY, "apply", "big", "/srv/big",
                              "/usr/share/doc", "--size", "50%"])
            apply_times.append(time.perf_counter() - start)
            cli_rss.append(int(result.stdout.split()[-1]) / 1024)
            pid = bed.run(["systemctl", "show", "-P", "MainPID", "sdoverlay.service"]).stdout.strip()
            status = bed.run(["cat", f"/proc/{pid}/status"]).stdout
            service_rss.append(int(next(line.split()[1] for line in status.splitlines()
                                        if line.startswith("VmHWM:"))) / 1024)
            assert bed.run(["sh", "-c", "ls /usr/share/doc/d7 | wc -l"]).stdout.strip() == str(args.files // 100)
            time.sleep(QUIET)
            bed.run([SDOVERLAY, "remove", "big"])

            time.sleep(QUIET)
            start = time.perf_counter()
            bed.run([SDOVERLAY, "apply", "big", "/srv/big", "/usr/share/doc", "--size", "50%"], env={"SUDO_UID": "1000"})
            user_times.append(time.perf_counter() - start)
            assert bed.run(["stat", "-c", "%u", "/usr/share/doc/d7/f7"]).stdout.strip() == "0"
            time.sleep(QUIET)
            bed.run([SDOVERLAY, "remove", "--force", "big"])
    cp_time, apply_time = statistics.median(cp_times), statistics.median(apply_times)
    megabytes = used / 1024 / 1024
    print(f"SOURCE: {args.files} files, {megabytes:.0f} MiB; median of {args.rounds} rounds\n")
    print(f"cp -a into a tmpfs     {cp_time * 1000:7.0f} ms   {megabytes / cp_time:6.0f} MiB/s   (reference)")
    print(f"sdoverlay apply        {apply_time * 1000:7.0f} ms   {megabytes / apply_time:6.0f} MiB/s   "
          f"{cp_time / apply_time:.2f}x the throughput")
    user_time = statistics.median(user_times)
    print(f"the same, for uid 1000 {user_time * 1000:7.0f} ms   {megabytes / user_time:6.0f} MiB/s   "
          f"{cp_time / user_time:.2f}x the throughput")
    print(f"peak RSS: CLI {max(cli_rss):.1f} MiB, service {max(service_rss):.1f} MiB (largest of the rounds)")


if __name__ == "__main__":
    main()
