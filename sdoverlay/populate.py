"""`python3 -m sdoverlay.populate METADATA...`: the content unit's program
(one METADATA), and the boot burst's (one for each overlay with a SOURCE).

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
    specs = [spec_from_metadata(parse_metadata(metadata)) for metadata in argv]
    if not specs or None in specs:
        print("usage: python3 -m sdoverlay.populate x-sdoverlay.name=...,x-sdoverlay.target=... ...", file=sys.stderr)
        return 2
    status = 0
    for spec in specs:  # each one, whatever became of the one before
        try:
            content.populate(spec)
        except SdoverlayError as error:
            print(error.message, file=sys.stderr)
            status = 1
        except OSError as error:
            print(f"cannot prepare overlay {spec.name!r}: {error.strerror}: {error.filename}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
