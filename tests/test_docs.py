"""Man pages (issue 11): each renders without a warning, and sdoverlay(1)
names every verb, option and exit code the CLI has."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from sdoverlay.cli import cli
from sdoverlay.errors import ExitCode
from tests.testbed import REPO

PAGES = ["sdoverlay.1", "sdoverlay.conf.5", "sdoverlay.d.5", "sdoverlay.service.8"]


def render(page: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["man", "--warnings", "-E", "UTF-8", "-l", str(REPO / "man" / page)], capture_output=True,
                          text=True, check=False, env={**os.environ, "MANWIDTH": "80"})


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_without_warnings(page: str) -> None:
    result = render(page)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert len(result.stdout.splitlines()) > 20


def test_sdoverlay_1_names_every_verb_option_and_exit_code() -> None:
    text = render("sdoverlay.1").stdout.replace("\u2010", "-").replace("\u2212", "-")
    missing = []
    for verb, command in cli.commands.items():
        if f"sdoverlay {verb}" not in text:
            missing.append(verb)
        for parameter in command.params:
            missing += [option for option in parameter.opts if option.startswith("-") and option not in text]
    missing += [option for parameter in cli.params for option in parameter.opts if option not in text]
    assert missing == []
    exit_status = text[text.index("EXIT STATUS"):text.index("FILES")]
    codes = [code for name, code in vars(ExitCode).items() if name.isupper()]
    assert codes == list(range(7))
    for code in codes:
        assert re.search(rf"^ +{code} +[A-Z]", exit_status, re.MULTILINE), code


def test_the_prerendered_help_is_what_click_prints() -> None:
    """`sdoverlay --help` is answered from sdoverlay/help.txt without importing
    click (issue 9); it must be click's own rendering (`make help` writes it)."""
    import sys

    from sdoverlay.entry import HELP_FILE

    def help_text(code: str, columns: str) -> str:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO,
                              env={**os.environ, "COLUMNS": columns}).stdout

    by_click = help_text("import sys; sys.argv = ['sdoverlay', '--help']; from sdoverlay.cli import main; main()", "100")
    by_entry = help_text("import sys; sys.argv = ['sdoverlay', '--help']; from sdoverlay.entry import main; main(); "
                         "assert 'click' not in sys.modules", "100")
    with open(HELP_FILE, encoding="utf-8") as file:
        assert file.read() == by_click == by_entry, "sdoverlay/help.txt is stale: run `make help`"
    narrow = help_text("import sys; sys.argv = ['sdoverlay', '--help']; from sdoverlay.entry import main; main()", "60")
    assert narrow != by_click and narrow.startswith("Usage: sdoverlay [OPTIONS] COMMAND [ARGS]...")
