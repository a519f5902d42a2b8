"""The demo behind scripts/demo: every step is a real command in a real systemd container."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.testbed import SDOVERLAY, VENV, Container  # noqa: E402

GENERATOR = str(VENV / "bin" / "sdoverlay-generator")


def step(bed: Container, title: str, *argv: str, expect_failure: bool = False) -> None:
    shown = shlex.join(["sdoverlay", *argv[1:]] if argv[0] == SDOVERLAY else list(argv))
    print(f"\n== {title}\n# {shown}")
    result = bed.run(list(argv), check=False)
    sys.stdout.write(result.stdout)
    sys.stdout.write(result.stderr)
    if (result.returncode != 0) != expect_failure:
        print(f"demo: unexpected exit code {result.returncode}", file=sys.stderr)
        raise SystemExit(1)
    if expect_failure:
        print(f"(exit code {result.returncode})")


def main() -> None:
    print("Booting a throwaway systemd container (host /usr read-only, fresh /etc, /var, /run)...")
    with Container() as bed:
        print(f"container {bed.machine} is up; its PID 1 is {bed.pid} on the host")
        bed.sh("mkdir -p /srv/patch/examples && echo 'patched by sdoverlay' > /srv/patch/README.sdoverlay")
        sh = ("sh", "-c")
        step(bed, "A read-only /usr", *sh, "touch /usr/share/doc/x || true")
        step(bed, "Apply /srv/patch over /usr/share/doc", SDOVERLAY, "apply", "demo", "/srv/patch", "/usr/share/doc")
        step(bed, "The applied file and the base files are both there", *sh,
             "cat /usr/share/doc/README.sdoverlay; ls /usr/share/doc | head -n 3")
        step(bed, "systemd tracks it", "systemctl", "list-units", "--no-pager", "*usroverlay*", "usr-share-doc.mount")
        step(bed, "Write to the target: it goes to memory under /run/usroverlay/demo/upper", *sh,
             "echo scratch > /usr/share/doc/scratch.txt && ls /run/usroverlay/demo/upper")
        step(bed, "List overlays", SDOVERLAY, "list")
        step(bed, "What it changed: the applied file and the write", SDOVERLAY, "diff", "demo")
        step(bed, "Reset: writes are gone, the applied file stays", SDOVERLAY, "reset", "demo")
        step(bed, "After reset", *sh, "ls /usr/share/doc/scratch.txt 2>&1; cat /usr/share/doc/README.sdoverlay")
        step(bed, "A second overlay on an overlapping target is refused", SDOVERLAY,
             "apply", "other", "/srv/patch", "/usr/share", expect_failure=True)
        step(bed, "Remove", SDOVERLAY, "remove", "demo")
        step(bed, "Nothing left: no unit, no mount, no directory", *sh,
             "systemctl list-units --all --no-legend '*usroverlay*' | wc -l; findmnt -rn -t overlay | wc -l; "
             "ls -A /run/usroverlay")
        step(bed, "Unlock all of /usr (a mount point) like `ostree admin unlock`, but named", SDOVERLAY,
             "unlock", "--json")
        step(bed, "Drop a tool into /usr/bin and run it", *sh,
             "printf '#!/bin/sh\\necho hello from an unlocked /usr\\n' > /usr/bin/sdo-hello && "
             "chmod +x /usr/bin/sdo-hello && sdo-hello")
        step(bed, "Keep it as a system extension instead", SDOVERLAY, "export", "usr", "/var/lib/extensions/hello")
        step(bed, "Remove it again, no reboot", SDOVERLAY, "remove", "usr")
        step(bed, "Gone", *sh, "command -v sdo-hello || echo 'sdo-hello: not found'; touch /usr/bin/x || true")
        step(bed, "Merge the extension: the tool is back, read-only", *sh,
             "systemd-sysext merge && sdo-hello && systemd-sysext unmerge")
        step(bed, "A private overlay: read-only for everyone, writable for one command", SDOVERLAY,
             "unlock", "/usr/share/man", "--private")
        step(bed, "Outside, a write fails; through `sdoverlay run` it works", *sh,
             f"touch /usr/share/man/x || true; {SDOVERLAY} run usr-share-man -- touch /usr/share/man/x && "
             "ls /usr/share/man/x")
        step(bed, "Remove it", SDOVERLAY, "remove", "usr-share-man")
        step(bed, "Install the boot-time generator (the test bed's /usr is read-only: link it in /etc)", *sh,
             f"mkdir -p /etc/systemd/system-generators && ln -s {GENERATOR} /etc/systemd/system-generators/ "
             "&& ls -l /etc/systemd/system-generators")
        step(bed, "A hotfix: an unlock whose writes survive reboots, from a drop-in", SDOVERLAY,
             "unlock", "--hotfix", "/usr/share/man")
        step(bed, "Its drop-in and its generated units", *sh,
             "cat /etc/sdoverlay.d/usr-share-man.conf; systemctl list-units --no-pager --no-legend '*usroverlay*'; "
             "systemctl show -P SourcePath usr-share-man.mount")
        step(bed, "Writes go to /var/lib/sdoverlay", *sh,
             "echo fixed > /usr/share/man/fix.txt && ls /var/lib/sdoverlay/usr-share-man/upper")
        step(bed, "Remove: units, drop-in and kept writes go", SDOVERLAY, "remove", "usr-share-man")
        step(bed, "The audit trail in the journal", SDOVERLAY, "log")
    print("\nContainer powered off. Demo complete.")


if __name__ == "__main__":
    main()
