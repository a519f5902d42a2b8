"""The generator's wall time with 1 and 50 drop-ins, and boot time with and without 20.

Every figure is a ratio against a reference run in the same invocation:
`python3 -I -c pass` (the floor any Python generator pays) for the
generator, and the same container booted without drop-ins for boot time.

Boots are of two kinds. The test bed's /etc is a fresh tmpfs, so without
more every boot is systemd's first boot (no /etc/machine-id), in which PID
1 applies the presets to every unit file it can see before loading units,
generated ones included (about 170 ms here, and most of a millisecond
more per generated unit file: measured apart, as PID 1's CPU time for that
pass run over D-Bus in a booted test bed). A "normal" boot, as a machine has every
time but its first, gets a machine-id bound into /etc (and
systemd-machine-id-commit masked, which would try to write it). `--boots 0`
measures no boots.

    sudo .venv/bin/python benchmarks/bench_generator.py [--rounds N] [--boots N] [--kinds both|normal|first]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.bench_scale import paired  # noqa: E402
from tests.testbed import VENV, Container, installed_generator_script  # noqa: E402

TARGETS = sorted(p.name for p in Path("/usr/share").iterdir() if p.is_dir() and not p.is_symlink())


def write_dropins(directory: Path, count: int) -> None:
    for index, target in enumerate(TARGETS[:count]):
        (directory / f"{index:02d}-{target}.conf").write_text(f"[Overlay]\nName=o{index}\nTarget=/usr/share/{target}\n")


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def generator_script(dropins: Path) -> str:
    """`python3 -I -c` code running this checkout's generator over the drop-ins in DROPINS."""
    return (
        f"import sys; sys.path.insert(0, {str(REPO)!r}); from sdoverlay import generator; "
        f"generator.DROPIN_DIRS[:] = [{str(dropins)!r}]; sys.exit(generator.main())"
    )


REFERENCE_COMMAND = ["/usr/bin/python3", "-I", "-c", "pass"]


def generator_runs(count: int, rounds: int) -> tuple[list[float], list[float]]:
    """The generator as systemd runs it, over COUNT drop-ins (in a dir it is
    pointed at), writing to a tmpfs as systemd's /run/systemd/generator is:
    on this machine's disk, creating the 150 unit files alone took 110 ms.
    Run as the installed script runs it where there is a drop-in
    (`/usr/bin/python3 -I -S`, see systemd/sdoverlay-generator.in; its sh
    loop before that is timed by installed_script_runs) with this checkout
    first on sys.path. Each run is paired with a run of REFERENCE_COMMAND
    right before or after it: (the reference's runs, the generator's)."""
    with tempfile.TemporaryDirectory(dir="/dev/shm") as scratch:
        dropins = Path(scratch) / "d"
        dropins.mkdir()
        write_dropins(dropins, count)
        script = generator_script(dropins)
        references: list[float] = []
        samples: list[float] = []
        for round_number in range(rounds):
            out = Path(scratch) / f"out{round_number}"
            out.mkdir()
            pair = [(references, REFERENCE_COMMAND), (samples, ["/usr/bin/python3", "-I", "-S", "-c", script, str(out)])]
            for runs, argv in pair if round_number % 2 == 0 else pair[::-1]:
                runs.append(timed(argv))
        return references, samples


def installed_script_runs(rounds: int) -> list[float]:
    """systemd/sdoverlay-generator.in, the installed generator, on this machine,
    which has no drop-in: its sh loop finds none and starts no Python. What
    every boot and daemon-reload of a machine without drop-ins pays."""
    from sdoverlay.generator import DROPIN_DIRS

    if any(any(Path(directory).glob("*.conf")) for directory in DROPIN_DIRS):
        raise SystemExit(f"this machine has drop-ins in {DROPIN_DIRS}: the script would start Python")
    with tempfile.TemporaryDirectory(dir="/dev/shm") as scratch:
        script = Path(scratch) / "sdoverlay-generator"
        script.write_text(installed_generator_script())
        script.chmod(0o755)
        out = Path(scratch) / "out"
        out.mkdir()
        return [timed([str(script), str(out)]) for _ in range(rounds)]


def generate(dropins: Path, out: Path) -> None:
    """The generator's output for the drop-ins in DROPINS, in OUT (its three dirs)."""
    dirs = [out / "generator", out / "generator.early", out / "generator.late"]
    for directory in dirs:
        directory.mkdir(parents=True)
    subprocess.run(["/usr/bin/python3", "-I", "-c", generator_script(dropins), *map(str, dirs)], check=True)


# Puts /run/preset-$1 in place of the test bed's /run/systemd/generator.
_USE_GENERATED = 'G=/run/systemd/generator; rm -rf "$G.next"; cp -a "/run/preset-$1" "$G.next"; rm -rf "$G"; mv "$G.next" "$G"'


def preset_pass_runs(rounds: int) -> tuple[list[float], list[float], int]:
    """What a first boot's preset pass costs PID 1 (see "Normal and first
    boots" in benchmarks/README.md): PID 1's CPU time for `systemctl --no-reload
    preset-all --preset-mode=enable-only` (`unit_file_preset_all`, which
    `manager_preset_all` runs at a first boot; Debian builds without
    first-boot-full-preset) in a booted test bed whose
    /run/systemd/generator holds the other generators' output alone, or
    with sdoverlay's for 20 drop-ins, interleaved. PID 1 itself, with its
    root "/": `systemctl --root` opens every component of its root's path
    on each lookup, and gave 0.6 to 2.1 ms a file in two runs minutes
    apart (session 13). Returns PID 1's CPU times without and with, and
    how many files the generator wrote at the top of its dir: what the
    pass looks at (it skips directories)."""
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        generators, dropins, output = scratch / "gen", scratch / "dropins", scratch / "output"
        generators.mkdir()
        dropins.mkdir()
        (generators / "sdoverlay-generator").write_text(installed_generator_script())
        (generators / "sdoverlay-generator").chmod(0o755)
        write_dropins(dropins, 20)
        generate(dropins, output)
        written = sorted((output / "generator").iterdir())
        ours = [path.name for path in written]
        unit_files = sum(1 for path in written if not path.is_dir())
        samples: dict[str, list[float]] = {"plain": [], "ours": []}
        with Container(binds=(f"{generators}:/etc/systemd/system-generators", f"{dropins}:/etc/sdoverlay.d")) as bed:
            # local-fs.target.wants/ holds other generators' links too: only
            # sdoverlay's own entries go, and that dir is not looked at.
            bed.run(["sh", "-ec", 'G=/run/systemd/generator; cp -a "$G" /run/preset-ours; cp -a "$G" /run/preset-plain; '
                     'cd /run/preset-plain; for name; do [ "$name" = local-fs.target.wants ] || rm -rf "./$name"; done',
                     "sh", *ours])
            preset_all = ["systemctl", "--no-reload", "preset-all", "--preset-mode=enable-only"]
            bed.run(preset_all)  # the first run enables what /etc lacks: not timed
            for round_number in range(rounds):
                for kind in samples if round_number % 2 == 0 else list(samples)[::-1]:
                    bed.run(["sh", "-ec", _USE_GENERATED, "sh", kind])
                    before = bed.pid1_cpu_ms()
                    bed.run(preset_all)
                    samples[kind].append(bed.pid1_cpu_ms() - before)
        return samples["plain"], samples["ours"], unit_files


def boot_userspace_ms(binds: tuple[str, ...], overlays: int, machine_id: Path | None) -> float:
    """One boot's userspace time; checks that OVERLAYS overlays are up, each
    on its own tmpfs area, and listed by `sdoverlay list`. MACHINE_ID: a
    normal boot with this /etc/machine-id; None: a first boot."""
    init_args: tuple[str, ...] = ()
    if machine_id is not None:
        binds = (*binds, f"{machine_id}:/etc/machine-id")
        init_args = ("systemd.mask=systemd-machine-id-commit.service",)
    with Container(binds=binds, init_args=init_args) as bed:
        # first-boot-complete.target has ConditionFirstBoot=yes.
        first = bed.run(["systemctl", "show", "-P", "ConditionResult", "first-boot-complete.target"]).stdout.strip()
        assert first == ("no" if machine_id is not None else "yes"), f"first boot: {first}"
        text = bed.run(["systemd-analyze"]).stdout
        mounted = bed.run(["findmnt", "-rn", "-t", "overlay", "-o", "TARGET"], check=False).stdout.split()
        areas = bed.run(["findmnt", "-rn", "-t", "tmpfs", "-o", "TARGET"]).stdout.split()
        # systemd may see the burst's mounts up to a second later (it reads
        # mountinfo at most 5 times a second): wait for it, not timed.
        for _ in range(30):
            listed = bed.run([str(VENV / "bin" / "sdoverlay"), "list", "--json"]).stdout
            if listed.count('"state": "active"') == overlays:
                break
            time.sleep(0.1)
    assert len(mounted) == overlays and sum(a.startswith("/run/usroverlay/") for a in areas) == overlays, text
    assert listed.count('"state": "active"') == overlays, listed
    match = re.search(r"in ([0-9.]+)(ms|s) \(userspace\)", text)
    assert match, text
    return float(match.group(1)) * (1000 if match.group(2) == "s" else 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--boots", type=int, default=21)
    parser.add_argument("--kinds", choices=["both", "normal", "first"], default="both",
                        help="which kind of boot to measure (see above)")
    args = parser.parse_args()
    rounds = args.rounds
    python = ["/usr/bin/python3"]
    median = statistics.median
    # The generator's runs are each paired with one of the reference
    # (generator_runs): this machine has slow spells of seconds, which a
    # block of reference runs and a block of generator runs, one after the
    # other, measured as much as the generator (benchmarks/README.md).
    one_reference, one_runs = generator_runs(1, rounds)
    fifty_reference, fifty_runs = generator_runs(50, rounds)
    floor = median(one_reference + fifty_reference)
    try:  # what rendering with jinja2 would add (python3-jinja2 is not a dependency)
        jinja: float | None = median([timed([*python, "-c", "import jinja2"]) for _ in range(rounds)])
    except subprocess.CalledProcessError:
        jinja = None
    script = median(installed_script_runs(rounds))
    one, fifty = median(one_runs), median(fifty_runs)
    print(f"median of {rounds} runs, wall time\n")
    print(f"python3 -I -c pass               {floor * 1000:7.1f} ms   (reference)")
    if jinja is None:
        print("python3 -c 'import jinja2'       (jinja2 not installed: apt-get install python3-jinja2 to compare)")
    else:
        print(f"python3 -c 'import jinja2'       {jinja * 1000:7.1f} ms   {jinja / floor:5.2f}x")
    print(f"installed generator, no drop-in  {script * 1000:7.1f} ms   {script / floor:5.2f}x   (no Python)")
    for label, value, references, runs in (("1 drop-in  ", one, one_reference, one_runs),
                                            (f"{min(50, len(TARGETS))} drop-ins", fifty, fifty_reference, fifty_runs)):
        ratio, low, high = paired(references, runs)
        print(f"generator, {label}           {value * 1000:7.1f} ms   {value / floor:5.2f}x   "
              f"paired {ratio:.2f}x ({low:.2f}-{high:.2f})")
    plain_runs, twenty_runs, unit_files = preset_pass_runs(rounds)
    plain, twenty = median(plain_runs), median(twenty_runs)
    ratio, low, high = paired(plain_runs, twenty_runs)
    print(f"\nfirst boot's preset pass, PID 1's CPU time (systemctl --no-reload preset-all in a booted test bed), "
          f"median of {rounds} interleaved runs")
    print(f"  the test bed's unit files      {plain:7.1f} ms   (reference)")
    print(f"  and 20 drop-ins' {unit_files} unit files {twenty:7.1f} ms   {twenty / plain:5.2f}x   "
          f"{twenty - plain:+5.1f} ms, {(twenty - plain) / unit_files:.2f} ms a file; "
          f"paired {ratio:.2f}x ({low:.2f}-{high:.2f})")

    if args.boots:
        boot_times(args.boots, args.kinds)


# The kinds of boot boot_times compares, the first the reference.
REFERENCE, GENERATOR_ALONE, WITH_DROPINS = "no sdoverlay generator", "generator, no drop-ins", "20 drop-ins (20 overlays)"


def boot_times(boots: int, which: str) -> None:
    """Boots without sdoverlay's generator (the reference), with it and no
    drop-ins (what installing sdoverlay costs every boot: the generator's
    Python start), and with it and 20 drop-ins."""
    median = statistics.median
    with tempfile.TemporaryDirectory() as scratch:
        generators, dropins, empty = Path(scratch) / "gen", Path(scratch) / "dropins", Path(scratch) / "empty"
        for directory in (generators, dropins, empty):
            directory.mkdir()
        # As installed: the sh script, which starts `/usr/bin/python3 -I -S`
        # where there are drop-ins, the package in the test bed's /usr
        # (tests/testbed.py), which the burst runs from too.
        (generators / "sdoverlay-generator").write_text(installed_generator_script())
        (generators / "sdoverlay-generator").chmod(0o755)
        write_dropins(dropins, 20)
        generator = f"{generators}:/etc/systemd/system-generators"
        variants = {  # name: (binds, overlays)
            REFERENCE: ((), 0),
            GENERATOR_ALONE: ((generator, f"{empty}:/etc/sdoverlay.d"), 0),
            WITH_DROPINS: ((generator, f"{dropins}:/etc/sdoverlay.d"), 20),
        }
        machine_id = Path(scratch) / "machine-id"
        machine_id.write_text(uuid.uuid4().hex + "\n")
        kinds = ("normal", "first") if which == "both" else (which,)
        samples: dict[tuple[str, str], list[float]] = {(kind, name): [] for kind in kinds for name in variants}
        for _ in range(boots):  # interleaved: all see the same machine
            for kind, name in samples:
                binds, overlays = variants[name]
                samples[kind, name].append(boot_userspace_ms(binds, overlays,
                                                             machine_id if kind == "normal" else None))
    print(f"\nsystemd-analyze userspace boot of the test bed, median of {boots} interleaved boots (all samples, sorted)")
    for kind in kinds:
        print(f"{kind} boots:")
        plain = median(samples[kind, REFERENCE])
        for name in variants:
            runs = samples[kind, name]
            # A stall: a boot that waited out systemd's mountinfo rate limit
            # (5 rescans a second) takes about a second longer than the others.
            compared = "(reference)" if name == REFERENCE else f"{median(runs) - plain:+5.0f} ms"
            print(f"  {name:28s} {median(runs):7.0f} ms   {compared:11s}   slowest {max(runs) / median(runs):.2f}x   "
                  f"{sorted(round(x) for x in runs)}")
        print(f"  20 drop-ins against the generator without drop-ins: "
              f"{median(samples[kind, WITH_DROPINS]) - median(samples[kind, GENERATOR_ALONE]):+.0f} ms")
        # The goal's figure is the difference of the medians above. Boots
        # of one round ran back to back, so the median of each round's
        # difference cancels more of this machine's slow spells (session 10).
        for name in (GENERATOR_ALONE, WITH_DROPINS):
            differences = [boot - reference for boot, reference in zip(samples[kind, name], samples[kind, REFERENCE])]
            low, _, high = statistics.quantiles(differences, n=4)
            print(f"  {name}, paired by round: median {median(differences):+.0f} ms, quartiles {low:+.0f} / {high:+.0f}")


if __name__ == "__main__":
    main()
