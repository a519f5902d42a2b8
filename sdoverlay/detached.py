"""`python3 -m sdoverlay.detached MOUNT_ID AREA`: the detached unit's program.

Waits until no process holds mount MOUNT_ID (an overlay detached lazily by
`remove`), then unmounts the overlay's area and removes its dir, so that
its memory is tracked by a unit until it is really freed (issue 7, item 6).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from sdoverlay import holders, paths

# Looked at every second at first, then less often: a detached /usr is held
# by every daemon started since the unlock, often until the next reboot.
POLL_SECONDS = 1.0
MAX_POLL_SECONDS = 30.0
# The kernel drops a detached mount's last reference a moment after its last
# user goes (delayed mntput): the area's unmount is tried again meanwhile.
UNMOUNT_TRIES = 50


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[0].isdigit() or not paths.is_within(argv[1], paths.AREA_ROOT):
        print("usage: python3 -m sdoverlay.detached MOUNT_ID /run/usroverlay/NAME", file=sys.stderr)
        return 2
    mount_id, area = int(argv[0]), argv[1]
    pause = POLL_SECONDS
    while holders.holders({mount_id}):
        time.sleep(pause)
        pause = min(pause * 1.5, MAX_POLL_SECONDS)
    for _ in range(UNMOUNT_TRIES):
        if subprocess.run(["/usr/bin/umount", area], capture_output=True, check=False).returncode == 0:
            break
        time.sleep(0.1)
    else:
        print(f"cannot unmount {area} after its detached overlay was released", file=sys.stderr)
        return 1
    try:
        os.rmdir(area)
    except FileNotFoundError:
        pass
    print(f"the detached overlay was released; {area} is unmounted", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
