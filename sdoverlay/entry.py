"""The sdoverlay command's entry point.

`sdoverlay --version` is answered here, before click is imported: click
alone takes about twice as long to import as Python takes to start (issue 9;
benchmarks/README.md). Everything else goes to sdoverlay.cli.
"""

from __future__ import annotations

import sys

from sdoverlay import VERSION_TEXT


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        print(VERSION_TEXT)
        return
    from sdoverlay.cli import main as cli_main

    cli_main()
