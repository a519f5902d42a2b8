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
from sdoverlay.spec import parse_metadata, spec_from_metadata


def main(argv: list[str]) -> int:
    spec = spec_from_metadata(parse_metadata(argv[0])) if len(argv) == 1 else None
    if spec is None:
        print("usage: python3 -m sdoverlay.populate x-sdoverlay.name=...,x-sdoverlay.target=...", file=sys.stderr)
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
