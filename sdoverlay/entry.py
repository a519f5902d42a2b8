"""The sdoverlay command's entry point.

`sdoverlay --version` and `sdoverlay --help` are answered here, before click
is imported: click alone takes about twice as long to import as Python takes
to start, and the CLI's module as long again (issue 9; benchmarks/README.md).
The help is click's own, rendered for a terminal of 80 columns or more
(HELP_FILE, written by `make help`; tests/test_docs.py checks it is what
click prints); on a narrower terminal click renders it. Everything else goes
to sdoverlay.cli.
"""

from __future__ import annotations

import os
import sys

from sdoverlay import VERSION_TEXT

HELP_FILE = os.path.join(os.path.dirname(__file__), "help.txt")
HELP_COLUMNS = 80  # click wraps its help to the terminal's width, at most 80 columns


def _wide_enough() -> bool:
    if "COLUMNS" in os.environ:
        return os.environ["COLUMNS"].isdigit() and int(os.environ["COLUMNS"]) >= HELP_COLUMNS
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns >= HELP_COLUMNS
    except (OSError, ValueError):
        return True  # not a terminal: click assumes 80 columns


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        print(VERSION_TEXT)
        return
    if sys.argv[1:] in (["--help"], ["-h"]) and _wide_enough():
        try:
            with open(HELP_FILE, encoding="utf-8") as file:
                sys.stdout.write(file.read())
            return
        except OSError:
            pass  # not installed with it: click renders it
    from sdoverlay.cli import main as cli_main

    cli_main()
