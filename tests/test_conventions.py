"""systemd's CLI conventions (issue 11): --json=pretty|short|off, --no-legend,
--no-pager and a pager on a terminal, -q."""

from __future__ import annotations

import json

from sdoverlay.cli import bare_json_is_pretty
from tests.testbed import Container


def test_a_bare_json_is_pretty_but_not_in_a_command_or_after_dashes() -> None:
    assert bare_json_is_pretty(["status", "--json", "x"]) == ["status", "--json=pretty", "x"]
    assert bare_json_is_pretty(["list", "--json=short"]) == ["list", "--json=short"]
    assert bare_json_is_pretty(["run", "x", "tool", "--json"]) == ["run", "x", "tool", "--json"]
    assert bare_json_is_pretty(["list", "--", "--json"]) == ["list", "--", "--json"]


def test_json_modes_legend_quiet_and_pager(bed: Container) -> None:
    quiet = bed.sdoverlay("unlock", "/usr/share/doc", "--name", "one", "-q", check=True)
    assert quiet.stdout == "" and quiet.stderr == ""
    bed.sdoverlay("unlock", "/usr/share/man", "--name", "two", check=True)

    short = bed.sdoverlay("list", "--json=short", check=True).stdout
    assert short.count("\n") == 1 and [entry["name"] for entry in json.loads(short)] == ["one", "two"]
    pretty = bed.sdoverlay("list", "--json", check=True).stdout
    assert pretty.count("\n") > 10 and json.loads(pretty) == json.loads(short)
    assert bed.sdoverlay("status", "--json", "one", check=True).stdout.startswith("{\n")  # not taken as a mode
    text = bed.sdoverlay("list", "--json=off", check=True).stdout
    assert text.startswith("NAME ") and text.endswith("\n2 overlay(s).\n")
    bare = bed.sdoverlay("list", "--no-legend", check=True).stdout.splitlines()
    assert [line.split()[0] for line in bare] == ["one", "two"]
    assert bed.sdoverlay("list", "--json=long").returncode == 2
    events = len(json.loads(bed.sdoverlay("log", "one", "--json", check=True).stdout))
    assert events >= 1 and bed.sdoverlay("log", "one", check=True).stdout.endswith(f"\n\n{events} event(s).\n")
    assert "event(s)" not in bed.sdoverlay("log", "one", "--no-legend", check=True).stdout

    # On a terminal, long output goes through $SYSTEMD_PAGER; not with --no-pager, nor into a pipe.
    def on_a_terminal(*args: str) -> str:
        bed.sh(f"printf '%s\\n' 'stty rows 3' 'SYSTEMD_PAGER=\"sed s/^/paged:/\" {bed.sdoverlay_path} {' '.join(args)}'"
               " > /tmp/on-a-tty.sh")
        return bed.sh("script -qec 'sh /tmp/on-a-tty.sh' /dev/null").stdout

    assert "paged:NAME" in on_a_terminal("list")
    unpaged = on_a_terminal("list", "--no-pager")
    assert "paged:" not in unpaged and "NAME" in unpaged
    piped = bed.sh(f"SYSTEMD_PAGER='sed s/^/paged:/' {bed.sdoverlay_path} list | cat").stdout
    assert "paged:" not in piped and "NAME" in piped

    for name in ("one", "two"):
        assert bed.sdoverlay("remove", name, "-q", check=True).stdout == ""


COMPLETE = """
source {script}
complete_words() {{ COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMPREPLY=(); _sdoverlay_completion {sdoverlay}; printf '%s\\n' "${{COMPREPLY[@]}}"; }}
echo verbs: $(complete_words sdoverlay re)
echo options: $(complete_words sdoverlay list --j)
echo names: $(complete_words sdoverlay remove '')
echo some: $(complete_words sdoverlay diff al)
"""


def bash_completions(bed: Container, script: str, sdoverlay: str) -> dict[str, list[str]]:
    bed.sh(f"cat > /tmp/complete.sh <<'EOF'\n{COMPLETE.format(script=script, sdoverlay=sdoverlay)}\nEOF")
    out = bed.run(["bash", "/tmp/complete.sh"]).stdout
    return {line.split(":")[0]: line.split(":")[1].split() for line in out.splitlines()}


def test_bash_completes_verbs_options_and_overlay_names(bed: Container) -> None:
    for name, target in (("alpha", "/usr/share/doc"), ("also", "/usr/share/man"), ("beta", "/usr/share/info")):
        bed.sdoverlay("unlock", target, "--name", name, "-q", check=True)
    bed.sh(f"_SDOVERLAY_COMPLETE=bash_source {bed.sdoverlay_path} > /tmp/sdoverlay.bash")
    found = bash_completions(bed, "/tmp/sdoverlay.bash", bed.sdoverlay_path)
    assert found == {"verbs": ["remove", "reset"], "options": ["--json"], "names": ["alpha", "also", "beta"],
                     "some": ["alpha", "also"]}
