"""Boot-time overlays on the real test bed: the generator, reboots, persist, hotfix."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from tests.test_overlays import listed, overlay_units
from tests.testbed import VENV, Container, installed_generator_script

GENERATOR = str(VENV / "bin" / "sdoverlay-generator")
INSTALL_GENERATOR = f"mkdir -p /etc/systemd/system-generators && ln -sf {GENERATOR} /etc/systemd/system-generators/\n"


def generator_dir(tmp_path: Path) -> str:
    """A host dir to bind at /etc/systemd/system-generators: the generator is there at boot."""
    directory = tmp_path / "generators"
    directory.mkdir()
    (directory / "sdoverlay-generator").symlink_to(GENERATOR)
    return str(directory)


def kept_across_reboots(tmp_path: Path) -> tuple[Path, Path, tuple[str, ...]]:
    """Host dirs for /etc/sdoverlay.d and /var/lib/sdoverlay, and the binds
    that give every container booted with them the generator and both."""
    etc, state = tmp_path / "etc-dropins", tmp_path / "state"
    etc.mkdir()
    state.mkdir()
    binds = (f"{generator_dir(tmp_path)}:/etc/systemd/system-generators", f"{etc}:/etc/sdoverlay.d",
             f"{state}:/var/lib/sdoverlay")
    return etc, state, binds


def source_dir(tmp_path: Path) -> str:
    directory = tmp_path / "src"
    directory.mkdir()
    (directory / "hello.txt").write_text("hello from a drop-in\n")
    return str(directory)


def state_of(bed: Container) -> str:
    return bed.run(["systemctl", "is-system-running"], check=False).stdout.strip()


def monotonic(bed: Container, unit: str, prop: str = "ActiveEnterTimestampMonotonic") -> int:
    return int(bed.run(["systemctl", "show", "-P", prop, unit]).stdout)


def test_new_dropin_reload_and_local_fs_target_mount_it(bed: Container) -> None:
    bed.sh(INSTALL_GENERATOR + """
        mkdir -p /srv/src /etc/sdoverlay.d && echo dropped > /srv/src/dropped.txt
        printf '[Overlay]\\nName=doc\\nTarget=/usr/share/doc\\nSource=/srv/src\\n' > /etc/sdoverlay.d/doc.conf
    """)
    bed.run(["systemctl", "daemon-reload"])
    bed.run(["systemctl", "start", "local-fs.target"])
    assert bed.run(["cat", "/usr/share/doc/dropped.txt"]).stdout == "dropped\n"
    # systemd reads mountinfo at most 5 times a second: it may take that long to see the burst's mounts.
    bed.sh("for i in $(seq 30); do systemctl is-active -q usr-share-doc.mount && exit 0; sleep 0.1; done; exit 1")
    entry = listed(bed)["doc"]
    assert entry["dropin"] == "/etc/sdoverlay.d/doc.conf" and entry["persistent"] is False
    assert entry["state"] == "active" and entry["owner_uid"] == 0
    assert bed.run(["systemctl", "show", "-P", "SourcePath", "usr-share-doc.mount"]).stdout.strip() == "/etc/sdoverlay.d/doc.conf"
    assert bed.run(["systemctl", "show", "-P", "UnitFileState", "usr-share-doc.mount"]).stdout.strip() == "generated"
    # The burst (sdoverlay-boot.service) mounted it; its own content unit
    # did not run.
    assert bed.run(["systemctl", "is-active", "sdoverlay-boot.service"]).stdout.strip() == "active"
    assert bed.run(["systemctl", "show", "-P", "ExecMainPID", "usroverlay-content@doc.service"]).stdout.strip() == "0"
    # Its content unit: the generator's template with the overlay's drop-in.
    assert entry["units"] == ["run-usroverlay-doc.mount", "usroverlay-content@doc.service", "usr-share-doc.mount"]
    content_unit = {prop: bed.run(["systemctl", "show", "-P", prop, "usroverlay-content@doc.service"]).stdout.split()
                    for prop in ("FragmentPath", "DropInPaths", "SourcePath")}
    assert content_unit["FragmentPath"] == ["/run/systemd/generator/usroverlay-content@.service"], content_unit
    assert "/run/systemd/generator/usroverlay-content@doc.service.d/overlay.conf" in content_unit["DropInPaths"]
    assert content_unit["SourcePath"] == ["/etc/sdoverlay.d/doc.conf"], content_unit
    assert "run-usroverlay-doc.mount" in overlay_units(bed)
    assert bed.run(["systemctl", "is-active", "run-usroverlay-doc.mount", "usr-share-doc.mount"]).stdout.split() == [
        "active", "active"]
    # Same units as the CLI: reset works on them too.
    bed.sh("touch /usr/share/doc/scratch")
    bed.sdoverlay("reset", "doc", check=True)
    assert bed.run(["test", "-e", "/usr/share/doc/scratch"], check=False).returncode != 0
    assert bed.run(["cat", "/usr/share/doc/dropped.txt"]).stdout == "dropped\n"
    # The reset ran the content unit, which made new upper and work dirs.
    assert bed.run(["systemctl", "is-active", "usroverlay-content@doc.service"]).stdout.strip() == "active"


def test_boot_with_dropins_mounts_them_and_skips_a_broken_one(tmp_path: Path) -> None:
    dropins = tmp_path / "dropins"
    dropins.mkdir()
    (dropins / "doc.conf").write_text("[Overlay]\nTarget=/usr/share/doc\nSource=/srv/src\n")
    (dropins / "usr.conf").write_text("[Overlay]\nTarget=/usr/share/man\n")
    (dropins / "broken.conf").write_text("[Overlay]\nTarget=/usr/share/info\nReadOnly=perhaps\n")
    binds = (f"{generator_dir(tmp_path)}:/etc/systemd/system-generators", f"{dropins}:/etc/sdoverlay.d",
             f"{source_dir(tmp_path)}:/srv/src")
    with Container(binds=binds) as bed:
        assert state_of(bed) in ("running", "degraded")
        failed = bed.run(["systemctl", "list-units", "--failed", "--plain", "--no-legend"]).stdout
        assert "usroverlay" not in failed and "usr-share" not in failed, failed
        assert bed.run(["cat", "/usr/share/doc/hello.txt"]).stdout == "hello from a drop-in\n"
        bed.sh("touch /usr/share/man/writable")
        # Mounted before local-fs.target was reached, as a local file system,
        # by the burst (systemd may record the mount units' state a little
        # later: it reads mountinfo at most 5 times a second).
        assert monotonic(bed, "sdoverlay-boot.service") <= monotonic(bed, "local-fs.target")
        assert bed.run(["systemctl", "is-active", "usr-share-doc.mount", "usr-share-man.mount",
                        "run-usroverlay-doc.mount", "run-usroverlay-usr.mount"]).stdout.split() == ["active"] * 4
        assert sorted(listed(bed)) == ["doc", "usr"]
        journal = bed.run(["journalctl", "-b", "--no-pager", "SYSLOG_IDENTIFIER=sdoverlay-generator"]).stdout
        assert "/etc/sdoverlay.d/broken.conf: ReadOnly=perhaps is not a boolean; skipped" in journal


def test_installed_generator_at_boot_and_on_daemon_reload(tmp_path: Path) -> None:
    """The generator as `make install` puts it (systemd/sdoverlay-generator.in:
    a sh loop that starts Python for the first drop-in it finds), running
    the package in the test bed's /usr as an image has it."""
    generators, dropins = tmp_path / "generators", tmp_path / "dropins"
    generators.mkdir()
    dropins.mkdir()
    installed = generators / "sdoverlay-generator"
    installed.write_text(installed_generator_script())
    installed.chmod(0o755)
    # A hidden file is not a drop-in (systemd's rule): nothing to generate.
    (dropins / ".hidden.conf").write_text("[Overlay]\nName=hidden\nTarget=/usr/share/info\n")
    binds = (f"{generators}:/etc/systemd/system-generators", f"{dropins}:/etc/sdoverlay.d")
    with Container(binds=binds) as bed:
        before = set(bed.run(["ls", "-A", "/run/systemd/generator"]).stdout.split())  # systemd's generators'
        assert not [name for name in before if "overlay" in name], before
        (dropins / "doc.conf").write_text("[Overlay]\nTarget=/usr/share/doc\n")
        bed.run(["systemctl", "daemon-reload"])
        generated = set(bed.run(["ls", "-A", "/run/systemd/generator"]).stdout.split())
        assert sorted(generated - before) == [
            "run-usroverlay-doc.mount", "sdoverlay-boot.service", "usr-share-doc.mount",
            "usroverlay-content@.service", "usroverlay-content@doc.service.d"], generated
        bed.run(["systemctl", "start", "sdoverlay-boot.service"])
        bed.sh("touch /usr/share/doc/writable")
        bed.sh("for i in $(seq 30); do systemctl is-active -q usr-share-doc.mount && exit 0; sleep 0.1; done; exit 1")
        assert sorted(listed(bed)) == ["doc"]


def test_an_overlay_the_burst_cannot_mount_is_reported_and_leaves_nothing(tmp_path: Path) -> None:
    """The burst mounts the others, fails and says why; nothing of the broken
    one is left (its area was never attached)."""
    dropins = tmp_path / "dropins"
    dropins.mkdir()
    (dropins / "good.conf").write_text("[Overlay]\nTarget=/usr/share/man\n")
    (dropins / "gone.conf").write_text("[Overlay]\nTarget=/usr/share/doc\nSource=/srv/missing\n")
    binds = (f"{generator_dir(tmp_path)}:/etc/systemd/system-generators", f"{dropins}:/etc/sdoverlay.d")
    with Container(binds=binds) as bed:
        bed.sh("touch /usr/share/man/writable")
        assert bed.run(["systemctl", "is-failed", "sdoverlay-boot.service"]).stdout.strip() == "failed"
        boot = bed.run(["journalctl", "-b", "--no-pager", "-u", "sdoverlay-boot.service"]).stdout
        assert "overlay gone: cannot prepare its area: cannot copy /srv/missing" in boot, boot
        assert "mounted 1 of 2 overlays" in boot, boot
        assert not bed.run(["findmnt", "-rn", "/usr/share/doc"], check=False).stdout
        assert bed.run(["test", "-e", "/run/usroverlay/gone"], check=False).returncode != 0
        assert "usroverlay-gone" not in bed.run(["systemctl", "list-units", "--failed", "--plain"]).stdout
        bed.sh("for i in $(seq 30); do systemctl is-active -q usr-share-man.mount && exit 0; sleep 0.1; done; exit 1")
        entries = listed(bed)
        assert entries["good"]["state"] == "active" and entries["gone"]["state"] == "inactive", entries
        bed.sdoverlay("remove", "gone", check=True)  # its drop-in stays: it is in the image


def test_persistent_writes_survive_a_reboot_transient_ones_do_not(tmp_path: Path) -> None:
    dropins, state = tmp_path / "dropins", tmp_path / "state"
    dropins.mkdir()
    state.mkdir()
    (dropins / "kept.conf").write_text("[Overlay]\nTarget=/usr/share/doc\nSource=/srv/src\nPersistent=yes\n")
    (dropins / "lost.conf").write_text("[Overlay]\nTarget=/usr/share/man\n")
    binds = (f"{generator_dir(tmp_path)}:/etc/systemd/system-generators", f"{dropins}:/etc/sdoverlay.d",
             f"{source_dir(tmp_path)}:/srv/src", f"{state}:/var/lib/sdoverlay")
    with Container(binds=binds) as bed:
        bed.sh("echo written > /usr/share/doc/kept.txt; echo written > /usr/share/man/lost.txt; rm /usr/share/doc/dpkg/copyright")
        entry = listed(bed)["kept"]
        assert entry["persistent"] is True and entry["dropin"] == "/etc/sdoverlay.d/kept.conf"
    assert (state / "kept" / "upper" / "kept.txt").read_text() == "written\n"
    with Container(binds=binds) as bed:  # the reboot
        assert bed.run(["cat", "/usr/share/doc/kept.txt"]).stdout == "written\n"
        assert bed.run(["test", "-e", "/usr/share/doc/dpkg/copyright"], check=False).returncode != 0  # the whiteout too
        assert bed.run(["cat", "/usr/share/doc/hello.txt"]).stdout == "hello from a drop-in\n"
        assert bed.run(["test", "-e", "/usr/share/man/lost.txt"], check=False).returncode != 0


def test_persist_a_live_overlay_then_reboot_then_remove(tmp_path: Path) -> None:
    etc, state, binds = kept_across_reboots(tmp_path)
    with Container(binds=binds) as bed:
        bed.sh("mkdir -p /srv/src && echo applied > /srv/src/applied.txt")
        bed.sdoverlay("apply", "live", "/srv/src", "/usr/share/doc", check=True)
        bed.sh("echo before > /usr/share/doc/before-persist.txt")
        result = bed.sdoverlay("persist", "live", "--json", check=True)
        entry = json.loads(result.stdout)
        assert entry["persistent"] is True and entry["dropin"] == "/etc/sdoverlay.d/live.conf"
        assert entry["source"] == "/var/lib/sdoverlay/live/content"
        assert bed.run(["cat", "/usr/share/doc/before-persist.txt"]).stdout == "before\n"
        assert bed.run(["cat", "/usr/share/doc/applied.txt"]).stdout == "applied\n"
        bed.sh("echo after > /usr/share/doc/after-persist.txt; rm /srv/src/applied.txt")
        dropin = (etc / "live.conf").read_text()
        assert "Persistent=yes" in dropin and "Target=/usr/share/doc" in dropin
        # Idempotent: persisting it again changes nothing and succeeds (as a
        # killed persist is finished by the next one).
        again = bed.sdoverlay("persist", "live", "--json")
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["state"] == "active"
        assert bed.run(["cat", "/usr/share/doc/after-persist.txt"]).stdout == "after\n"
    with Container(binds=binds) as bed:  # the reboot
        for name, text in (("before-persist.txt", "before\n"), ("after-persist.txt", "after\n"), ("applied.txt", "applied\n")):
            assert bed.run(["cat", f"/usr/share/doc/{name}"]).stdout == text
        bed.sdoverlay("remove", "live", check=True)
        assert overlay_units(bed) == []
        assert bed.run(["findmnt", "-rn", "-t", "overlay", "/usr/share/doc"], check=False).stdout == ""
        assert listed(bed) == {}
    assert not (etc / "live.conf").exists()
    assert not (state / "live").exists()


def test_unlock_hotfix_and_remove(bed: Container) -> None:
    # Without the generator installed: refused, and nothing is left.
    result = bed.sdoverlay("unlock", "--hotfix", "/usr/share/man")
    assert result.returncode == 1, result.stderr
    assert "is sdoverlay-generator installed" in result.stderr
    assert bed.run(["ls", "-A", "/etc/sdoverlay.d"], check=False).stdout == ""
    assert overlay_units(bed) == []

    bed.sh(INSTALL_GENERATOR)
    entry = json.loads(bed.sdoverlay("unlock", "--hotfix", "/usr/share/man", "--json", check=True).stdout)
    assert entry["persistent"] is True and entry["dropin"] == "/etc/sdoverlay.d/usr-share-man.conf"
    bed.sh("echo fix > /usr/share/man/hotfix.txt")
    assert bed.run(["cat", "/var/lib/sdoverlay/usr-share-man/upper/hotfix.txt"]).stdout == "fix\n"
    text = bed.sdoverlay("list", check=True).stdout
    assert "rw,persistent" in text and "/etc/sdoverlay.d/usr-share-man.conf" in text
    bed.sdoverlay("remove", "usr-share-man", check=True)
    assert overlay_units(bed) == []
    assert bed.run(["test", "-e", "/etc/sdoverlay.d/usr-share-man.conf"], check=False).returncode != 0
    assert bed.run(["test", "-e", "/var/lib/sdoverlay/usr-share-man"], check=False).returncode != 0
    assert bed.run(["test", "-e", "/usr/share/man/hotfix.txt"], check=False).returncode != 0


def test_removing_a_vendor_overlay_masks_its_dropin(bed: Container) -> None:
    # The image's vendor dir: /usr/local/lib is read-only in the test bed, so
    # a tmpfs stands in for an image that ships a drop-in there.
    bed.sh(INSTALL_GENERATOR + """
        mount -t tmpfs tmpfs /usr/local/lib && mkdir /usr/local/lib/sdoverlay.d
        printf '[Overlay]\\nTarget=/usr/share/doc\\n' > /usr/local/lib/sdoverlay.d/vendor.conf
    """)
    bed.run(["systemctl", "daemon-reload"])
    bed.run(["systemctl", "start", "local-fs.target"])
    assert listed(bed)["vendor"]["dropin"] == "/usr/local/lib/sdoverlay.d/vendor.conf"
    bed.sdoverlay("remove", "vendor", check=True)
    assert bed.run(["readlink", "/etc/sdoverlay.d/vendor.conf"]).stdout == "/dev/null\n"
    assert bed.run(["test", "-e", "/usr/local/lib/sdoverlay.d/vendor.conf"]).returncode == 0
    assert overlay_units(bed) == []
    bed.run(["systemctl", "daemon-reload"])  # stays masked
    assert overlay_units(bed) == [] and listed(bed) == {}
    assert not os.path.exists("/etc/sdoverlay.d/vendor.conf")  # the host is untouched


def test_hotfix_of_usr_itself_survives_a_reboot(tmp_path: Path) -> None:
    """`ostree admin unlock --hotfix`, named: all of /usr, kept across reboots."""
    etc, state, binds = kept_across_reboots(tmp_path)
    with Container(binds=binds) as bed:
        entry = json.loads(bed.sdoverlay("unlock", "--hotfix", "--json", check=True).stdout)
        assert entry["name"] == "usr" and entry["kind"] == "service" and entry["persistent"] is True
        bed.sh("printf '#!/bin/sh\\necho hotfixed\\n' > /usr/bin/sdo-fix && chmod +x /usr/bin/sdo-fix")
    with Container(binds=binds) as bed:  # the reboot
        assert state_of(bed) in ("running", "degraded")
        assert bed.run(["sdo-fix"]).stdout == "hotfixed\n"
        assert monotonic(bed, "usroverlay-usr.service") <= monotonic(bed, "local-fs.target")
        # Every daemon started since boot runs from the hotfixed /usr: the
        # overlay is detached lazily, they are named, and it stays listed
        # (and its area mounted) until they exit.
        result = bed.sdoverlay("remove", "usr", check=True)
        assert re.search(r"detached lazily: still used by \d+ \(\S+\)", result.stdout), result.stdout
        assert bed.run(["test", "-e", "/usr/bin/sdo-fix"], check=False).returncode != 0
        assert overlay_units(bed) == ["run-usroverlay-usr.mount", "usroverlay-usr-detached.service"]
        assert listed(bed)["usr"]["state"] == "detached"
    assert list(etc.iterdir()) == [] and list(state.iterdir()) == []


def test_persist_a_read_only_overlay(bed: Container) -> None:
    bed.sh(INSTALL_GENERATOR + "mkdir -p /srv/src && echo shipped > /srv/src/shipped.txt")
    bed.sdoverlay("apply", "--read-only", "ro", "/srv/src", "/usr/share/doc", check=True)
    entry = json.loads(bed.sdoverlay("persist", "ro", "--json", check=True).stdout)
    assert entry["persistent"] is True and entry["read_only"] is True
    assert "ReadOnly=yes" in bed.run(["cat", "/etc/sdoverlay.d/ro.conf"]).stdout
    assert bed.run(["cat", "/usr/share/doc/shipped.txt"]).stdout == "shipped\n"
    assert bed.run(["touch", "/usr/share/doc/x"], check=False).returncode != 0
    assert bed.sh("ls -A /var/lib/sdoverlay/ro").stdout.split() == ["content"]
    bed.sdoverlay("remove", "ro", check=True)
    assert overlay_units(bed) == [] and listed(bed) == {}
    assert bed.run(["test", "-e", "/var/lib/sdoverlay/ro"], check=False).returncode != 0


def test_a_layered_dropin_is_mounted_at_boot_the_last_source_on_top(tmp_path: Path) -> None:
    """Source=A:B:C in a drop-in: the boot burst fills one layer per SOURCE (issue 10)."""
    etc, _state, binds = kept_across_reboots(tmp_path)
    layers = []
    for index, files in enumerate([{"a.txt": "1", "only1.txt": "1"}, {"a.txt": "2", "b.txt": "2"}, {"a.txt": "3"}]):
        layer = tmp_path / f"l{index + 1}"
        layer.mkdir()
        for name, text in files.items():
            (layer / name).write_text(text)
        layers.append(f"/srv/l{index + 1}")
        binds += (f"{layer}:/srv/l{index + 1}",)
    (etc / "layered.conf").write_text(f"[Overlay]\nTarget=/usr/share/doc/bash\nSource={':'.join(layers)}\n")
    with Container(binds=binds) as bed:
        assert bed.sh("cd /usr/share/doc/bash && cat a.txt b.txt only1.txt").stdout == "321"
        assert listed(bed)["layered"]["sources"] == layers
        assert "sdoverlay-boot.service" in bed.run(["systemctl", "list-units", "--state=active", "--plain",
                                                    "--no-legend", "sdoverlay-boot.service"]).stdout
