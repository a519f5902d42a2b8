"""`python3 -m sdoverlay.populate METADATA`: the content unit's program.

METADATA is the overlay's x-sdoverlay.* options (as in its area unit), so
the unit carries everything it needs: no D-Bus and no state file, at boot
or at apply. Errors are one line on stderr (the journal, under
SyslogIdentifier=sdoverlay-populate, where the CLI reads the reason).
"""

from __future__ import annotations

import sys

from sdoverlay import content
from sdoverlay.errors import SdoverlayError
from sdoverlay.spec import spec_from_argument


def main(argv: list[str]) -> int:
    spec = spec_from_argument(argv, "sdoverlay.populate")
    if spec is None:
        return 2
    try:
        content.populate(spec)
    except SdoverlayError as error:
        print(error.message, file=sys.stderr)
        return 1
    except OSError as error:
        print(f"cannot prepare overlay {spec.name!r}: {error.strerror}: {error.filename}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
