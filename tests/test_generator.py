"""The generator on temporary dirs: output checked with systemd-analyze verify."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from sdoverlay import generator
from sdoverlay.spec import CONTENT_TEMPLATE_UNIT
from tests.image import UNCOMPILED_MODULES
from tests.testbed import PYTHON_SITE, installed_generator_script


@pytest.fixture
def logged(monkeypatch) -> list[str]:
    messages: list[str] = []
    monkeypatch.setattr(generator, "_log", lambda message, priority=3: messages.append(message))
    return messages


@pytest.fixture
def dirs(tmp_path) -> tuple[Path, Path, Path, Path]:
    """(output, admin, runtime-like, vendor) dirs."""
    out, admin, runtime, vendor = (tmp_path / d for d in ("out", "etc", "run", "lib"))
    for directory in (out, admin, runtime, vendor):
        directory.mkdir()
    return out, admin, runtime, vendor


def run(out: Path, *dropin_dirs: Path) -> list:
    return generator.generate(str(out), [str(d) for d in dropin_dirs])


def tree(directory: Path) -> dict[str, str]:
    found = {}
    for path in sorted(directory.rglob("*")):
        key = str(path.relative_to(directory))
        found[key] = os.readlink(path) if path.is_symlink() else ("" if path.is_dir() else path.read_text())
    return found


def verify(out: Path) -> None:
    """systemd-analyze verify of every unit the generator wrote to OUT: the
    unit files, and the instances of the content template (each with its
    drop-in; verify would test the template as an instance without one)."""
    files = sorted(str(p) for p in out.iterdir() if p.is_file() and not p.name.endswith("@.service"))
    files += sorted(str(p.with_suffix("")) for p in out.glob("*@*.service.d"))
    assert any("@" in file for file in files) == (out / CONTENT_TEMPLATE_UNIT).exists()
    completed = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *files], capture_output=True, text=True,
        env={**os.environ, "SYSTEMD_UNIT_PATH": f"{out}:"},
    )
    # Unknown keys are only warned about (exit 0): any output is a defect too.
    assert completed.returncode == 0 and completed.stderr == "", completed.stderr


def test_units_for_a_dropin_pass_systemd_analyze_verify(dirs, logged) -> None:
    out, admin, _, _ = dirs
    (admin / "doc.conf").write_text("[Overlay]\nTarget=/usr/share/doc\nSource=/srv/x\nSize=64M\n")
    (admin / "usr.conf").write_text("[Overlay]\nName=whole\nTarget=/usr/share/man\nPersistent=yes\n")
    specs = run(out, admin)
    assert [s.name for s in specs] == ["doc", "whole"] and logged == []
    # Mounted at boot by the burst, which its units follow (sdoverlay.burst).
    assert tree(out)["local-fs.target.wants/sdoverlay-boot.service"] == "../sdoverlay-boot.service"
    assert "local-fs.target.wants/usr-share-doc.mount" not in tree(out)
    assert "SourcePath=" + str(admin / "doc.conf") in tree(out)["run-usroverlay-doc.mount"]
    assert "RequiresMountsFor=/var/lib/sdoverlay/whole" in tree(out)["usr-share-man.mount"]
    assert f"|| exec {sys.executable} -m sdoverlay.populate" in tree(out)["usroverlay-content@doc.service.d/overlay.conf"]
    # The content units: one template and a drop-in each, so that a first
    # boot's preset pass has two unit files per overlay to read, not three.
    assert sorted(name for name in tree(out) if "content" in name) == [
        "usroverlay-content@.service", "usroverlay-content@doc.service.d", "usroverlay-content@doc.service.d/overlay.conf",
        "usroverlay-content@whole.service.d", "usroverlay-content@whole.service.d/overlay.conf"]
    assert "Requires=usroverlay-content@whole.service" in tree(out)["usr-share-man.mount"]
    verify(out)


def test_the_burst_command_imports_without_site(dirs, logged) -> None:
    """The burst's unit runs it as `PYTHON -I -S -c CODE METADATA...`
    (sdoverlay.units.boot_program): no `site`, so everything it imports
    must be the standard library's or the package's, found where the
    generator found it. Run here without METADATA: the burst then imports
    all it ever imports at start, prints its usage and exits 2."""
    out, admin, _, _ = dirs
    (admin / "doc.conf").write_text("[Overlay]\nTarget=/usr/share/doc\nSource=/srv/x\n")
    run(out, admin)
    exec_start = [line for line in tree(out)["sdoverlay-boot.service"].splitlines() if line.startswith("ExecStart=")]
    words = shlex.split(exec_start[0].removeprefix("ExecStart=").replace("%%", "%"))
    assert words[:4] == [sys.executable, "-I", "-S", "-c"] and words[5].startswith("x-sdoverlay.name=doc,"), words
    imports = "; import sdoverlay.content, sdoverlay.populate; "  # what it imports for a SOURCE
    code = words[4].replace("; from sdoverlay.burst import", imports + "from sdoverlay.burst import")
    completed = subprocess.run(["/usr/bin/python3", *words[1:4], code], capture_output=True, text=True, cwd="/")
    assert (completed.returncode, completed.stdout) == (2, ""), completed.stderr
    assert completed.stderr.startswith("usage: python3 -m sdoverlay.burst "), completed.stderr


def test_usr_itself_is_mounted_by_a_service(dirs, logged) -> None:
    out, admin, _, _ = dirs
    (admin / "usr.conf").write_text("[Overlay]\nTarget=/usr\nPersistent=yes\n")
    # Whether /usr is a mount point depends on the machine; both kinds must verify.
    (spec,) = run(out, admin)
    assert spec.overlay_unit in ("usr.mount", "usroverlay-usr.service")
    verify(out)


def test_first_dir_wins_and_masks(dirs, logged) -> None:
    out, admin, runtime, vendor = dirs
    (vendor / "a.conf").write_text("[Overlay]\nTarget=/usr/share/doc\n")
    (admin / "a.conf").write_text("[Overlay]\nTarget=/usr/share/man\n")  # overrides the vendor's
    (vendor / "b.conf").write_text("[Overlay]\nTarget=/usr/share/info\n")
    (admin / "b.conf").symlink_to("/dev/null")  # masks it
    (vendor / "c.conf").write_text("[Overlay]\nTarget=/usr/share/locale\n")
    (runtime / "c.conf").write_text("")  # an empty file masks too
    (vendor / "d.conf").write_text("[Overlay]\nTarget=/usr/share/common-licenses\n")
    (admin / ".e.conf").write_text("[Overlay]\nName=e\nTarget=/usr/share/info\n")  # hidden: not read
    specs = run(out, admin, runtime, vendor)
    assert [(s.name, s.target, s.dropin) for s in specs] == [
        ("a", "/usr/share/man", str(admin / "a.conf")),
        ("d", "/usr/share/common-licenses", str(vendor / "d.conf")),
    ]
    assert logged == []


def test_broken_dropins_are_skipped_and_reported_the_rest_generated(dirs, logged) -> None:
    out, admin, _, _ = dirs
    bad = {
        "01-nosection.conf": "Target=/usr/share/doc\n",
        "02-section.conf": "[Mount]\nTarget=/usr/share/doc\n",
        "03-key.conf": "[Overlay]\nTarget=/usr/share/doc\nFrob=1\n",
        "04-target.conf": "[Overlay]\nSource=/srv\n",
        "05-outside.conf": "[Overlay]\nTarget=/etc\n",
        "06-bool.conf": "[Overlay]\nTarget=/usr/share/doc\nReadOnly=maybe\n",
        "07-ro.conf": "[Overlay]\nTarget=/usr/share/doc\nReadOnly=yes\n",
        "08-size.conf": "[Overlay]\nTarget=/usr/share/doc\nSize=lots\n",
        "09-name.conf": "[Overlay]\nName=a.b\nTarget=/usr/share/doc\n",
        "10-source.conf": "[Overlay]\nTarget=/usr/share/doc\nSource=relative\n",
        "11-missing.conf": "[Overlay]\nTarget=/usr/share/nonexistent\n",
        "12-binary.conf": "\udcff",
    }
    for name, text in bad.items():
        (admin / name).write_bytes(text.encode("utf-8", "surrogateescape"))
    (admin / "50-good.conf").write_text("[Overlay]\nTarget=/usr/share/doc\n")
    (admin / "60-overlap.conf").write_text("[Overlay]\nTarget=/usr/share/doc/dpkg\n")
    (admin / "70-dupname.conf").write_text("[Overlay]\nName=50-good\nTarget=/usr/share/man\n")
    specs = run(out, admin)
    assert [s.name for s in specs] == ["50-good"]
    assert len(logged) == len(bad) + 2
    for message, name in zip(logged, sorted(bad) + ["60-overlap.conf", "70-dupname.conf"]):
        assert message.startswith(str(admin / name) + ": ") and message.endswith("; skipped"), message
    assert "unknown key Frob=" in logged[2]
    assert "target /etc is not at or under an allowed root" in logged[4]
    assert "overlaps /usr/share/doc" in logged[-2]
    assert "is used by" in logged[-1]
    report = tree(out)[generator.REPORT_UNIT]
    assert report.count("ExecStart=/usr/bin/echo") == len(logged)
    assert tree(out)[f"sysinit.target.wants/{generator.REPORT_UNIT}"] == f"../{generator.REPORT_UNIT}"
    verify(out)


def test_output_is_deterministic(tmp_path, dirs, logged) -> None:
    out, admin, _, _ = dirs
    for index in range(5):
        (admin / f"o{index}.conf").write_text(f"[Overlay]\nTarget=/usr/share/{['doc', 'man', 'info', 'locale', 'zoneinfo'][index]}\n")
    (admin / "bad.conf").write_text("[Overlay]\n")
    run(out, admin)
    second = tmp_path / "second"
    second.mkdir()
    run(second, admin)
    assert tree(out) == tree(second)


def test_main_usage_and_exit_codes(dirs, logged) -> None:
    out, _, _, _ = dirs
    assert generator.main([]) == 2
    assert generator.main([str(out), str(out), str(out)]) == 0


# The installed generator (systemd/sdoverlay-generator.in, as `make install`
# fills it in): a sh loop over the drop-in dirs' *.conf, then this Python
# code for the first one found, in a Python without `site`.
GENERATOR_SCRIPT = installed_generator_script()
INSTALLED_GENERATOR_CODE = (f'import sys; sys.path.append("{PYTHON_SITE}"); '
                            "from sdoverlay.generator import main; sys.exit(main())")


def test_installed_generator_starts_python_where_the_generator_reads_dropins() -> None:
    assert GENERATOR_SCRIPT.startswith("#!/bin/sh\n")
    (loop,) = [line for line in GENERATOR_SCRIPT.splitlines() if line.startswith("for dropin in ")]
    globs = loop.removeprefix("for dropin in ").removesuffix("; do").split()
    assert globs == [f"{directory}/*.conf" for directory in generator.DROPIN_DIRS]
    assert f"exec /usr/bin/python3 -I -S -c '{INSTALLED_GENERATOR_CODE}' \"$@\"" in GENERATOR_SCRIPT


def test_installed_generator_without_dropins_writes_nothing_and_exits_0(tmp_path) -> None:
    """Where none of the drop-in dirs has a *.conf (this machine's; the
    tests never write to them), the sh loop finds none and the script exits
    0 (systemd logs a generator's other exit codes as failures), silent,
    having written nothing. That it starts no Python then is timed by
    benchmarks/bench_generator.py, not asserted here."""
    if any(any(Path(directory).glob("*.conf")) for directory in generator.DROPIN_DIRS):
        pytest.fail("this machine has sdoverlay drop-ins; the test needs a machine without")
    completed = subprocess.run(["sh", "-c", GENERATOR_SCRIPT, "sdoverlay-generator", str(tmp_path)],
                               capture_output=True, text=True)
    assert (completed.returncode, completed.stdout, completed.stderr) == (0, "", "")
    assert list(tmp_path.iterdir()) == []


def test_make_install_refuses_a_python_site_its_commands_would_not_find(tmp_path) -> None:
    """PREFIX=/usr/local alone would put the package in
    /usr/local/lib/python3/dist-packages, which Debian's `python3 -I` does not
    search: the commands could not import it. make says so, installing nothing."""
    root = tmp_path / "root"
    repo = Path(__file__).resolve().parent.parent
    completed = subprocess.run(["make", "-s", "-C", str(repo), "install", f"DESTDIR={root}", "PREFIX=/usr/local"],
                               capture_output=True, text=True)
    assert completed.returncode == 2  # make's exit code for a failed recipe
    assert completed.stderr.splitlines()[0] == (
        "make: PYTHON_SITE=/usr/local/lib/python3/dist-packages is not on the path of /usr/bin/python3 -I, "
        "where sdoverlay's commands look for it; set PYTHON_SITE to a dir that is")
    assert not root.exists()


def test_make_install_gives_a_working_generator(tmp_path, dirs) -> None:
    """The installed tree is self-contained: its generator runs on Debian's python3."""
    out, admin, _, _ = dirs
    root = tmp_path / "root"
    repo = Path(__file__).resolve().parent.parent
    subprocess.run(["make", "-C", str(repo), "install", f"DESTDIR={root}"], check=True, capture_output=True)
    generator_script = root / "usr/lib/systemd/system-generators/sdoverlay-generator"
    assert generator_script.read_text() == GENERATOR_SCRIPT
    assert os.access(generator_script, os.X_OK)
    for path in ("usr/bin/sdoverlay", "usr/lib/systemd/catalog/sdoverlay.catalog",
                 "usr/share/man/man5/sdoverlay.d.5", "usr/share/man/man1/sdoverlay.1",
                 "usr/share/man/man5/sdoverlay.conf.5", "usr/share/man/man8/sdoverlay.service.8",
                 "usr/share/bash-completion/completions/sdoverlay", "usr/share/zsh/vendor-completions/_sdoverlay",
                 "usr/share/fish/vendor_completions.d/sdoverlay.fish",
                 "usr/share/doc/sdoverlay/examples/50-sdoverlay.rules",
                 f"{PYTHON_SITE.removeprefix('/')}/sdoverlay/units/content.service"):
        assert (root / path).is_file(), path
    (admin / "doc.conf").write_text("[Overlay]\nTarget=/usr/share/doc\nSource=/srv\n")
    site = root / PYTHON_SITE.removeprefix("/")
    # What the script runs where there is a drop-in (its dirs are checked
    # above and it runs for real in tests/test_boot.py), in a Python without
    # `site`, finding the package in DESTDIR's PYTHON_SITE.
    run_installed = (
        f"import sys; sys.path.append({str(site)!r}); import sdoverlay.generator as g; "
        f"assert g.__file__.startswith({str(site)!r}), g.__file__; "
        f"g.DROPIN_DIRS[:] = [{str(admin)!r}]; sys.argv = ['-c', {str(out)!r}]; "
        f"{INSTALLED_GENERATOR_CODE}"
    )
    subprocess.run(["/usr/bin/python3", "-I", "-S", "-c", run_installed], check=True)
    # Byte-compiled for that Python, to be read from a read-only /usr.
    uncompiled = subprocess.run(["/usr/bin/python3", "-I", "-c", UNCOMPILED_MODULES, str(site / "sdoverlay")],
                                check=True, capture_output=True, text=True).stdout
    assert uncompiled == ""
    content_unit = (out / "usroverlay-content@doc.service.d/overlay.conf").read_text()
    assert "|| exec /usr/bin/python3 -m sdoverlay.populate" in content_unit
    verify(out)


def test_a_dropin_made_on_another_image_is_stale_and_said_by_the_report_only(dirs, logged, monkeypatch) -> None:
    from sdoverlay import imageid

    out, admin, _runtime, vendor = dirs
    monkeypatch.setattr(imageid, "current", lambda: "ostree:" + "b" * 64)
    (admin / "old.conf").write_text(f"[Overlay]\nName=old\nTarget=/usr/share/doc\nImage=ostree:{'a' * 64}\n")
    (admin / "now.conf").write_text(f"[Overlay]\nName=now\nTarget=/usr/share/man\nImage=ostree:{'b' * 64}\n")
    (vendor / "vendor.conf").write_text("[Overlay]\nName=vendor\nTarget=/usr/share/info\n")  # part of the image
    assert sorted(spec.name for spec in run(out, admin, vendor)) == ["now", "vendor"]
    made_for, running, metadata = (out / generator.STALE_DIR / "old").read_text().splitlines()
    assert (made_for, running) == (f"ostree:{'a' * 64}", f"ostree:{'b' * 64}") and "x-sdoverlay.name=old" in metadata
    assert not any("old" in name for name in os.listdir(out) if name.endswith((".mount", ".service")))
    assert logged == []  # not at every run: the report unit says it once a boot
    report = (out / generator.REPORT_UNIT).read_text()
    assert f"overlay old was made on ostree commit {'a' * 12}, and this boot runs ostree commit {'b' * 12}" in report


def test_the_image_is_the_booted_deployments_commit_else_os_release(tmp_path, monkeypatch) -> None:
    from sdoverlay import imageid

    release = tmp_path / "os-release"
    release.write_text('ID=debian\nIMAGE_ID="workstation"\nIMAGE_VERSION=41.2\n')
    monkeypatch.setattr(imageid, "OS_RELEASE", str(release))
    monkeypatch.setattr(imageid, "OSTREE_BOOTED", str(tmp_path / "not-booted"))
    assert imageid.current() == "os-release:IMAGE_ID=workstation IMAGE_VERSION=41.2"
    release.write_text("ID=debian\nVERSION_ID=12\n")
    assert imageid.current() == ""  # nothing names the image: never stale
    booted, deploy = tmp_path / "booted", tmp_path / "deploy"
    booted.touch()
    (deploy / "debian" / "deploy").mkdir(parents=True)
    os.symlink("/", deploy / "debian" / "deploy" / ("c" * 64 + ".0"))  # the same dir as /, as a booted one is
    monkeypatch.setattr(imageid, "OSTREE_BOOTED", str(booted))
    monkeypatch.setattr(imageid, "OSTREE_DEPLOY", str(deploy))
    assert imageid.current() == "ostree:" + "c" * 64
    assert imageid.describe(imageid.current()) == "ostree commit " + "c" * 12
