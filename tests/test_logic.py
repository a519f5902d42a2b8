"""Pure logic: escaping, names, metadata, unit rendering and property building."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pytest
from dbus_next import Variant

from sdoverlay import (
    api,
    collect,
    config,
    diagnostics,
    identity,
    ini,
    mountinfo,
    paths,
    prettyjson,
    sizes,
    unitfile,
    units,
    unmounter,
    validate,
)
from sdoverlay.errors import Conflict, ExitCode, InvalidInput, PermissionDenied
from sdoverlay.spec import CONTENT_TEMPLATE_PREFIX, OverlaySpec, parse_metadata, spec_from_metadata
from sdoverlay.status import OverlayStatus


def make_spec(**overrides) -> OverlaySpec:
    values = dict(
        name="demo", target="/usr/share/doc", source="/tmp/src", read_only=False, size="25%",
        owner_uid=1000, created_at="2026-11-25T10:00:00Z", kind="mount", lazy_unmount=False,
    )
    values.update(overrides)
    return OverlaySpec(**values)


@pytest.mark.parametrize(
    "path",
    ["/run/usroverlay/demo", "/run/usroverlay/my-name", "/usr/share/doc", "/usr//lib/", "/",
     "/usr/.hidden", "/usr/a b", "/usr/ünï", "/usr/x:y_z.w"],
)
def test_escape_path_matches_systemd_escape(path: str) -> None:
    expected = subprocess.run(
        ["systemd-escape", "--path", "--", path], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert paths.escape_path(path) == expected


@pytest.mark.parametrize("name", ["a", "demo", "my-overlay_2", "_x", "A" * 64])
def test_valid_names(name: str) -> None:
    assert paths.check_name(name) is None


@pytest.mark.parametrize("name", ["", "-lead", "a/b", "a.b", "a b", "x" * 65, "ü", "a\n"])
def test_invalid_names(name: str) -> None:
    assert paths.check_name(name) is not None


def test_containment_is_by_component() -> None:
    assert paths.is_within("/usr/lib", "/usr/lib")
    assert paths.is_within("/usr/lib/x", "/usr/lib")
    assert not paths.is_within("/usr/lib64", "/usr/lib")
    assert paths.overlaps("/usr", "/usr/share/x")
    assert not paths.overlaps("/usr/share/a", "/usr/share/ab")


@pytest.mark.parametrize("name", ["demo", "my-name", "a_b-c-", "x" * 64, "0"])
def test_area_unit_names_back_to_overlay_names(name: str) -> None:
    assert paths.name_of_area_unit(paths.mount_unit_name(paths.area_dir(name))) == name


@pytest.mark.parametrize("unit", ["usr-share-doc.mount", "run-usroverlay-a\\x2eb.mount", "run-usroverlay-.mount",
                                  "run-usroverlay-demo.service", "run-usroverlay-\\x2dlead.mount",
                                  "run-usroverlay-a-b.mount"])
def test_other_units_name_no_overlay(unit: str) -> None:
    assert paths.name_of_area_unit(unit) is None


def test_containment_by_string_agrees_with_components() -> None:
    # is_within compares normal absolute paths as strings (issue 9); on
    # any paths it must answer as the comparison of components does.
    import itertools

    def by_components(path: str, parent: str) -> bool:
        path_parts = [part for part in path.split("/") if part]
        parent_parts = [part for part in parent.split("/") if part]
        return path_parts[: len(parent_parts)] == parent_parts

    parts = ["usr", "lib", "lib64", "", ".", "..", ".x", "a.b"]
    relative = ["/".join(combination) for length in range(4) for combination in itertools.product(parts, repeat=length)]
    candidates = {form for path in relative for form in (path, "/" + path, "/" + path + "/")}
    parents = [path for path in candidates if path.count("/") <= 2]
    for path, parent in itertools.product(candidates, parents):
        assert paths.is_within(path, parent) == by_components(path, parent), (path, parent)


@pytest.mark.parametrize("path", ["/usr/a,b", "/usr/a:b", "/usr/a b", "/usr/a%b", "/usr/a\\b", "/usr/a\x01"])
def test_unsafe_path_chars(path: str) -> None:
    assert paths.check_path_chars(path) is not None


def test_default_unlock_name() -> None:
    assert paths.default_unlock_name("/usr") == "usr"
    assert paths.default_unlock_name("/usr/share/my.dir") == "usr-share-my_dir"


@pytest.mark.parametrize("size", ["25%", "100%", "512M", "1G", "4096", "10k"])
def test_sizes_accepted(size: str) -> None:
    assert sizes.is_tmpfs_size(size)


@pytest.mark.parametrize("size", ["0", "0%", "101%", "-1M", "1T", "lots", "1.5G"])
def test_sizes_refused(size: str) -> None:
    assert not sizes.is_tmpfs_size(size)


@pytest.mark.parametrize("size", ["18446744073709551616", "18446744073709555000", "99999999999999999999999",
                                  "17179869184G"])
def test_sizes_that_would_wrap_in_tmpfs_are_refused(size: str) -> None:
    assert sizes.is_tmpfs_size(size)  # tmpfs' syntax, but no machine has that much
    with pytest.raises(InvalidInput, match="more than this machine's memory and swap"):
        validate.size(size)


def test_a_size_up_to_memory_and_swap_is_taken(monkeypatch) -> None:
    monkeypatch.setattr(sizes, "memory_and_swap_bytes", lambda: 4 * 1024**3)
    assert validate.size("4G") == "4G" and validate.size("100%") == "100%"
    with pytest.raises(InvalidInput):
        validate.size("4194305k")


@pytest.mark.parametrize("version", ["1", "1.2.3", "2026.12_rc-1", "a" * 255])
def test_export_versions_os_release_allows(version: str) -> None:
    from sdoverlay import export

    export.check_version(version)
    assert export.release_text(version).endswith(f"SYSEXT_VERSION_ID={version}\n")


@pytest.mark.parametrize("version", ["", "1\nID=evil", "../x", "1.0 beta", "1/2", "UPPER", ".", "..", "a" * 256,
                                     "1\x00"])
def test_export_versions_refused(version: str) -> None:
    from sdoverlay import export

    with pytest.raises(InvalidInput, match="invalid --version"):
        export.check_version(version)


def test_the_reader_of_source_round_trips_and_defaults_to_the_owner() -> None:
    sudo = make_spec(owner_uid=1000, reader_uid=0)
    assert spec_from_metadata(parse_metadata(sudo.metadata_options)) == sudo and sudo.copied_as_uid == 0
    older = parse_metadata(make_spec().metadata_options)
    del older["reader-uid"]  # an overlay made before the field existed
    assert spec_from_metadata(older).copied_as_uid == 1000


def test_metadata_round_trip_with_awkward_source() -> None:
    spec = make_spec(source="/tmp/a,b=c%d e", read_only=True, kind="service", lazy_unmount=True)
    assert spec_from_metadata(parse_metadata(spec.metadata_options)) == spec


def test_metadata_of_foreign_mount_is_none() -> None:
    assert spec_from_metadata(parse_metadata("rw,size=1k,mode=755")) is None


def test_overlay_options() -> None:
    assert make_spec().overlay_options == (
        "lowerdir=/run/usroverlay/demo/content:/usr/share/doc,upperdir=/run/usroverlay/demo/upper,"
        "workdir=/run/usroverlay/demo/work,index=off,metacopy=off,redirect_dir=off"
    )
    assert make_spec(read_only=True).overlay_options == (
        "lowerdir=/run/usroverlay/demo/content:/usr/share/doc,index=off,metacopy=off,redirect_dir=off"
    )
    assert make_spec(source=None).overlay_options.startswith("lowerdir=/usr/share/doc,upperdir=")


@pytest.mark.parametrize("overrides", [
    {}, {"read_only": True}, {"source": None}, {"source": "/tmp/a:/tmp/b"}, {"persistent": True},
])
def test_every_layer_of_the_overlay_lies_within_its_layer_roots(overrides) -> None:
    """layer_roots says which kernel lines can be about this overlay's mount
    (sdoverlay.diagnostics): it must cover every path the mount names."""
    spec = make_spec(**overrides)
    options = dict(option.partition("=")[::2] for option in spec.overlay_options.split(","))
    layers = [*options["lowerdir"].split(":"), *(options[key] for key in ("upperdir", "workdir") if key in options)]
    assert len(layers) >= 2
    for layer in layers:
        assert any(paths.is_within(layer, root) for root in spec.layer_roots), (layer, spec.layer_roots)


def test_mount_kind_units_as_properties() -> None:
    area, content_unit, overlay = units.render(make_spec(source="/tmp/100%"))
    assert area.name == "run-usroverlay-demo.mount"
    assert overlay.name == "usr-share-doc.mount"
    area_props = dict(unitfile.to_properties(area.text))
    # The area goes only when sdoverlay removes it (area.mount says why).
    assert "StopWhenUnneeded" not in area_props and "PartOf" not in area_props
    assert area_props["Where"] == Variant("s", "/run/usroverlay/demo")
    # '%' is '%%' in the unit file text and a plain '%' on the bus.
    assert "%%25" in area.text
    assert area_props["Options"] == Variant("s", "mode=0700,size=25%")  # no metadata: no utab entry
    [metadata] = [field for field in area_props["LogExtraFields"].value if field.startswith(b"SDOVERLAY_METADATA=")]
    assert b"x-sdoverlay.source=/tmp/100%25" in metadata
    assert "SourcePath" not in area_props  # no drop-in: the line is left out
    overlay_props = dict(unitfile.to_properties(overlay.text))
    assert overlay_props["BindsTo"] == Variant("as", ["run-usroverlay-demo.mount"])
    assert overlay_props["Requires"] == Variant("as", ["usroverlay-demo-content.service"])
    assert overlay_props["After"] == Variant("as", ["run-usroverlay-demo.mount", "usroverlay-demo-content.service"])
    assert overlay_props["LazyUnmount"] == Variant("b", False)
    content_props = dict(unitfile.to_properties(content_unit.text))
    copy, upper, work = content_props["ExecStart"].value
    # Python copies only where the content dir is missing (a reset keeps it).
    assert copy[1][:2] == ["/bin/sh", "-c"]
    words = shlex.split(copy[1][2])
    assert words[:5] == ["test", "-d", "/run/usroverlay/demo/content", "||", "exec"]
    assert words[5:8] == [sys.executable, "-m", "sdoverlay.populate"]
    # The content unit's program gets the spec back from its argument.
    assert spec_from_metadata(parse_metadata(words[8])) == make_spec(source="/tmp/100%")
    # Upper and work dirs: coreutils; the upper root like TARGET, made only where missing.
    doc = os.stat("/usr/share/doc")
    assert upper[1] == ["/bin/sh", "-c", "test -d /run/usroverlay/demo/upper || exec /usr/bin/install -d "
                        f"-m {doc.st_mode & 0o7777:04o} -o {doc.st_uid} -g {doc.st_gid} /run/usroverlay/demo/upper"]
    assert work[1] == ["/usr/bin/install", "-d", "-m", "0700", "/run/usroverlay/demo/work"]
    assert content_props["RequiresMountsFor"] == Variant("as", [sys.executable, "/tmp/100%"])
    assert content_props["StopWhenUnneeded"] == Variant("b", True)


def test_service_kind_units_as_properties() -> None:
    *_, overlay = units.render(make_spec(name="usr", target="/usr", source=None, kind="service", lazy_unmount=True))
    assert overlay.name == "usroverlay-usr.service"
    props = dict(unitfile.to_properties(overlay.text))
    assert props["RequiresMountsFor"] == Variant("as", ["/usr"])
    (start,) = props["ExecStart"].value
    assert start[0] == "/usr/bin/mount"
    assert start[1][-1] == "/usr" and start[2] is False
    (stop,) = props["ExecStop"].value
    assert stop[1] == ["/usr/bin/umount", "-l", "/usr"]
    assert props["DefaultDependencies"] == Variant("b", False)


def test_content_unit_of_an_overlay_without_source_starts_no_python() -> None:
    _, content_unit, _ = units.render(make_spec(source=None, persistent=True))
    commands = [command[1][0] for command in dict(unitfile.to_properties(content_unit.text))["ExecStart"].value]
    assert commands == ["/usr/bin/install", "/bin/sh", "/usr/bin/install"]
    assert "RequiresMountsFor=/var/lib/sdoverlay/demo\n" in content_unit.text
    _, read_only_content, _ = units.render(make_spec(read_only=True))
    (only,) = dict(unitfile.to_properties(read_only_content.text))["ExecStart"].value
    assert only[1][:2] == ["/bin/sh", "-c"] and " -m sdoverlay.populate " in only[1][2]


def test_persistent_overlay_keeps_its_writes_under_var_lib() -> None:
    spec = make_spec(persistent=True, dropin="/etc/sdoverlay.d/demo.conf")
    assert spec.upper_dir == "/var/lib/sdoverlay/demo/upper"
    assert "upperdir=/var/lib/sdoverlay/demo/upper," in spec.overlay_options
    area, content_unit, overlay = units.render(spec)
    assert "SourcePath=/etc/sdoverlay.d/demo.conf" in area.text
    assert f"RequiresMountsFor={sys.executable} /tmp/src /var/lib/sdoverlay/demo" in content_unit.text
    assert "RequiresMountsFor=/var/lib/sdoverlay/demo" in overlay.text


def test_a_dropins_content_unit_is_an_instance_of_one_template() -> None:
    transient, from_dropin = make_spec(), make_spec(dropin="/etc/sdoverlay.d/demo.conf")
    assert transient.content_unit == "usroverlay-demo-content.service"
    assert from_dropin.content_unit == "usroverlay-content@demo.service"
    assert from_dropin.units == ["run-usroverlay-demo.mount", "usroverlay-content@demo.service", "usr-share-doc.mount"]
    files = dict(units.generated_files(from_dropin))
    assert list(files) == ["run-usroverlay-demo.mount", "usroverlay-content@demo.service.d/overlay.conf",
                           "usr-share-doc.mount"]
    _, content_unit, overlay = units.render(from_dropin)
    assert files["usroverlay-content@demo.service.d/overlay.conf"] == content_unit.text
    assert "Requires=usroverlay-content@demo.service\n" in overlay.text
    template = units.content_template()
    assert template.name == "usroverlay-content@.service" and from_dropin.content_unit.startswith(CONTENT_TEMPLATE_PREFIX)
    # The template sets nothing an instance's drop-in would have to undo.
    assert [line for line in template.text.splitlines() if line and not line.startswith("#")] == [
        "[Unit]", "Description=sdoverlay %i: fill the area of the overlay", "[Service]", "Type=oneshot",
        "Slice=system.slice"]


@pytest.mark.parametrize("argument", ["/usr/bin/python3", "/a b/py", 'we"ird', "back\\slash", "50%"])
def test_exec_quote_round_trips_through_the_unit_parser(argument: str) -> None:
    text = f"[Service]\nExecStart=/bin/echo {units.exec_quote(argument)}\n"
    (command,) = dict(unitfile.to_properties(text))["ExecStart"].value
    assert command[1] == ["/bin/echo", argument]


def test_hold_unit_binds_the_area() -> None:
    hold = units.render_hold(make_spec())
    assert hold.name == "usroverlay-demo-hold.service"
    props = dict(unitfile.to_properties(hold.text))
    assert props["BindsTo"] == Variant("as", ["run-usroverlay-demo.mount"])
    assert props["RemainAfterExit"] == Variant("b", True)


def test_unknown_unit_key_is_refused() -> None:
    with pytest.raises(ValueError, match="no transient property"):
        unitfile.to_properties("[Unit]\nDescription=x\n[Mount]\nSloppyOptions=yes\n")


def test_mountinfo_parse_unescapes() -> None:
    text = (
        "36 35 98:0 / /usr rw,noatime master:1 - ext4 /dev/vda rw\n"
        "40 36 0:44 / /usr/share/a\\040b rw shared:5 - overlay overlay rw,lowerdir=/x,upperdir=/y\n"
        "41 36 0:45 / /mnt/- rw shared:6 master:2 - tmpfs my\\134tmp\\011fs rw\n"
    )
    entries = mountinfo.parse(text)
    assert mountinfo.is_mount_point("/usr", entries)
    assert entries[1].mount_point == "/usr/share/a b"
    assert entries[1].super_options == "rw,lowerdir=/x,upperdir=/y"
    assert entries[2] == mountinfo.MountEntry(mount_id=41, mount_point="/mnt/-", fs_type="tmpfs",
                                              source="my\\tmp\tfs", super_options="rw", device="0:45")


def test_lazy_unmount_when_target_covers_umount_or_its_libraries() -> None:
    files = unmounter.unmount_tool_files()
    assert unmounter.needs_lazy_unmount("/usr", files)
    assert unmounter.needs_lazy_unmount("/usr/bin", files)
    assert not unmounter.needs_lazy_unmount("/usr/share/doc", files)
    # ldd is the oracle: every dir holding umount or a library it loads is
    # covered, and a dir beside them is not.
    listing = subprocess.run(["ldd", unmounter.UMOUNT], capture_output=True, text=True, check=True).stdout
    loaded = {os.path.realpath(word) for word in listing.split() if word.startswith("/")}
    assert any("libmount" in path for path in loaded)
    for path in loaded | {os.path.realpath(unmounter.UMOUNT)}:
        assert unmounter.needs_lazy_unmount(os.path.dirname(path), files), path
        assert not unmounter.needs_lazy_unmount(os.path.dirname(path) + "/nonexistent-subdir", files)


def test_scan_counts_what_tmpfs_will_take(tmp_path) -> None:
    (tmp_path / "one").write_bytes(b"x")  # one page
    (tmp_path / "two").write_bytes(b"y" * 4097)  # two pages
    os.link(tmp_path / "two", tmp_path / "two-again")  # the same inode: counted once
    os.symlink("short", tmp_path / "short-link")  # kept in the inode
    os.symlink("l" * 200, tmp_path / "long-link")  # a page of its own
    (tmp_path / "dir").mkdir()
    found = validate.scan(str(tmp_path))
    assert found.bytes_needed == 4 * 4096
    assert not (found.special or found.privileged or found.world_writable or found.unreadable)


def test_scan_finds_what_must_be_refused(tmp_path) -> None:
    suid = tmp_path / "suid"
    suid.write_text("x")
    suid.chmod(0o4755)
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    os.mkfifo(tmp_path / "fifo")
    os.symlink("/etc/shadow", tmp_path / "outside")  # a link is never followed
    found = validate.scan(str(tmp_path))
    assert found.privileged == [str(suid)]
    assert found.world_writable == [str(open_dir)]
    assert found.special == [str(tmp_path / "fifo")]
    with pytest.raises(InvalidInput, match="device nodes, FIFOs or sockets"):
        validate.content(found, "source x", allow_setuid=True, allow_world_writable=True)


def test_session_from_cgroup_needs_a_known_session() -> None:
    assert identity.session_id("0::/system.slice/foo.service\n") == ""
    # A session scope logind does not know (none here) is not reported.
    assert identity.session_id("0::/user.slice/user-1000.slice/session-999999.scope\n") == ""


def test_config_layering(tmp_path, monkeypatch) -> None:
    etc, lib = tmp_path / "etc", tmp_path / "lib"
    for base in (etc, lib):
        (base / "sdoverlay.conf.d").mkdir(parents=True)
    (lib / "sdoverlay.conf").write_text("[Overlays]\nAllowedRoots=/opt\n")
    (lib / "sdoverlay.conf.d" / "10-vendor.conf").write_text("[Overlays]\nMaxOverlaysPerOwner=3\n")
    (lib / "sdoverlay.conf.d" / "20-masked.conf").write_text("[Overlays]\nMaxBytesPerOwner=1G\n")
    (etc / "sdoverlay.conf.d" / "20-masked.conf").symlink_to("/dev/null")
    (etc / "sdoverlay.conf.d" / "30-admin.conf").write_text("[Overlays]\nAllowedRoots=/usr\n")
    monkeypatch.setattr(config, "CONFIG_DIRS", [str(etc), str(lib)])
    loaded = config.load()
    assert loaded.allowed_roots == ("/opt", "/usr")
    assert loaded.max_overlays_per_owner == 3
    assert loaded.max_bytes_per_owner is None  # the vendor file is masked
    (etc / "sdoverlay.conf.d" / "40-reset.conf").write_text("[Overlays]\nAllowedRoots=\nAllowedRoots=/srv\n")
    assert config.load().allowed_roots == ("/srv",)
    (etc / "sdoverlay.conf.d" / "50-bad.conf").write_text("[Overlays]\nAllowedRoots=relative\n")
    with pytest.raises(InvalidInput, match="'relative' is not a plain absolute path"):
        config.load()


def test_tmpfs_size_bytes() -> None:
    assert sizes.tmpfs_size_bytes("1M") == 1048576
    assert sizes.tmpfs_size_bytes("10k") == 12288  # rounded up to pages
    assert sizes.tmpfs_size_bytes("100%") == sizes.mem_total_bytes() // 4096 * 4096


@pytest.mark.parametrize("argument", ["/srv/my src", "/a$b", "/semi;colon", "/ünï", 'q"uote', "/50%"])
def test_paths_in_list_settings_round_trip(argument: str) -> None:
    text = f"[Unit]\nRequiresMountsFor=/plain {units.word_quote(argument)}\n"
    assert dict(unitfile.to_properties(text))["RequiresMountsFor"].value == ["/plain", argument]


def test_dollar_in_a_command_line_is_doubled_for_systemd() -> None:
    assert units.exec_quote("/a$b") == '"/a$$b"'
    text = f"[Service]\nExecStart=/bin/echo {units.exec_quote('/my src/$HOME')}\n"
    (command,) = dict(unitfile.to_properties(text))["ExecStart"].value
    assert command[1] == ["/bin/echo", "/my src/$$HOME"]  # systemd turns $$ into $ when it runs it


def test_unit_dependencies_keep_their_escapes() -> None:
    text = "[Unit]\nBindsTo=run-usroverlay-usr\\x2dshare.mount\n"
    assert dict(unitfile.to_properties(text))["BindsTo"].value == ["run-usroverlay-usr\\x2dshare.mount"]


def test_log_extra_fields_are_quoted_bytes() -> None:
    spec = make_spec(source="/srv/my src")
    content_unit = units.render(spec)[1]
    fields = dict(unitfile.to_properties(content_unit.text))["LogExtraFields"].value
    assert b"SDOVERLAY_SOURCE=/srv/my src" in fields and b"SDOVERLAY_NAME=demo" in fields


def test_the_live_overlay_does_not_make_its_target_a_foreign_mount_point() -> None:
    text = (
        "36 35 98:0 / /usr rw - ext4 /dev/vda rw\n"
        "50 36 0:60 / /usr/share/man rw - overlay overlay rw,lowerdir=/usr/share/man,"
        "upperdir=/var/lib/sdoverlay/h1/upper,workdir=/var/lib/sdoverlay/h1/work\n"
        "51 36 0:61 / /usr/share/doc rw - overlay overlay rw,lowerdir=/run/usroverlay/d/content:/usr/share/doc\n"
        "52 36 0:62 / /usr/share/info rw - overlay overlay rw,lowerdir=/other:/usr/share/info\n"
    )
    entries = mountinfo.parse(text)
    assert entries[1].mount_id == 50
    assert mountinfo.is_foreign_mount_point("/usr", entries)
    assert not mountinfo.is_foreign_mount_point("/usr/share/man", entries)
    assert not mountinfo.is_foreign_mount_point("/usr/share/doc", entries)
    assert mountinfo.is_foreign_mount_point("/usr/share/info", entries)  # someone else's overlay


def test_only_regular_small_utf8_files_are_read(tmp_path) -> None:
    (tmp_path / "good.conf").write_text("[Overlay]\n")
    os.mkfifo(tmp_path / "fifo.conf")
    (tmp_path / "dir.conf").mkdir()
    (tmp_path / "dangling.conf").symlink_to(tmp_path / "missing")
    (tmp_path / "zero.conf").symlink_to("/dev/zero")
    (tmp_path / "huge.conf").write_text("#" * (ini.MAX_FILE_BYTES + 1))
    (tmp_path / "bad.conf").write_bytes(b"\xff\xfe")
    assert ini.read_regular_file(str(tmp_path / "good.conf")) == "[Overlay]\n"
    for name, why in (("fifo", "a FIFO"), ("dir", "a directory"), ("zero", "a character device"),
                      ("huge", "larger than")):
        with pytest.raises(ValueError, match=why):
            ini.read_regular_file(str(tmp_path / f"{name}.conf"))
    with pytest.raises(FileNotFoundError):
        ini.read_regular_file(str(tmp_path / "dangling.conf"))
    with pytest.raises(UnicodeDecodeError):
        ini.read_regular_file(str(tmp_path / "bad.conf"))


@pytest.mark.parametrize("unit, name", [
    ("run-usroverlay-my\\x2dname.mount", "my-name"),  # a mount unit's name escapes '-'
    ("run-usroverlay-a\\x2eb.mount", None),  # no valid name
    ("run-usroverlay-doc.mount", "doc"),
    ("usroverlay-my-name-content.service", "my-name"),
    ("usroverlay-x-hold.service", "x"),
    ("usroverlay-x-detached.service", "x"),
    ("usroverlay-usr.service", "usr"),
    ("usroverlay-content@my-name.service", "my-name"),  # a drop-in's content unit
    ("usroverlay-content@.service", None),  # its template
    ("usroverlay-content@a.b.service", None),
    ("usroverlay-content-hold.service", "content"),  # overlay "content"
    ("sshd.service", None),
])
def test_overlay_name_of_unit(unit: str, name: str | None) -> None:
    found = collect.overlay_name_of_unit(unit)
    assert found == name or (name is None and found is not None and paths.check_name(found) is not None)


def test_service_errors_map_to_exit_codes_and_back() -> None:
    for error in (Conflict("taken"), PermissionDenied("no"), InvalidInput("bad")):
        back = api.error_from(api.error_name(error), error.message)
        assert type(back) is type(error) and back.message == error.message
    assert api.error_from("org.freedesktop.DBus.Error.Failed", "x") is None
    assert api.error_name(PermissionDenied("x")).endswith(".PermissionDenied")
    assert ExitCode.PERMISSION == 5


def test_introspection_lists_every_method_with_its_signature() -> None:
    xml = api.introspection_xml()
    for method, (signature, names) in api.METHODS.items():
        assert f'<method name="{method}">' in xml
        assert len(api._split_signature(signature)) == len(names)


def test_user_allowed_roots_are_never_wider(tmp_path, monkeypatch) -> None:
    etc = tmp_path / "etc"
    (etc).mkdir()
    (etc / "sdoverlay.conf").write_text("[Overlays]\nAllowedRoots=/usr\nUserAllowedRoots=/usr/share/doc /srv\n")
    monkeypatch.setattr(config, "CONFIG_DIRS", [str(etc)])
    limits = config.load()
    assert limits.roots_for(0) == ("/usr",)
    assert limits.roots_for(1000) == ("/usr/share/doc",)


def test_users_default_to_trees_no_privileged_process_runs(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(config, "CONFIG_DIRS", [str(tmp_path)])
    limits = config.load()
    assert limits.roots_for(0) == ("/usr",)
    assert limits.roots_for(1000) == ("/usr/share/doc", "/usr/share/info", "/usr/share/man")


def test_templates_have_no_empty_settings_of_their_own() -> None:
    """units._render drops a setting whose value is empty after substitution
    (an optional one); a template must not rely on an empty setting itself."""
    directory = os.path.dirname(units.__file__)
    for name in os.listdir(directory):
        if name.endswith((".mount", ".service")):
            with open(os.path.join(directory, name), encoding="utf-8") as file:
                for line in file:
                    key, sep, value = line.rstrip("\n").partition("=")
                    if sep and not key.startswith("#"):
                        assert value.strip(), f"{name}: {line!r}"


@pytest.mark.parametrize("value", ["/usr/share/doc", "/tmp/100%", "a,b=c", "/ünï code", "%zz", "", "x" * 300])
def test_metadata_quoting_round_trips(value: str) -> None:
    from sdoverlay.paths import percent_decode
    from sdoverlay.spec import quote_metadata

    quoted = quote_metadata(value)
    assert "," not in quoted and "=" not in quoted
    assert percent_decode(quoted) == value


def test_target_index_agrees_with_overlaps() -> None:
    taken = ["/usr/share/doc", "/usr/lib/x", "/opt"]
    index = paths.TargetIndex()
    for path in taken:
        index.add(path, path)
    for candidate in ["/usr", "/usr/share", "/usr/share/doc", "/usr/share/doc/a/b", "/usr/share/docs", "/usr/lib",
                      "/usr/lib/x/y", "/usr/lib64", "/opt/z", "/", "/srv", "/usr//share/doc/"]:
        expected = next((path for path in taken if paths.overlaps(candidate, path)), None)
        assert (index.overlapping(candidate) is None) == (expected is None), candidate
        if expected is not None:
            assert paths.overlaps(candidate, index.overlapping(candidate)), candidate


# Issue 9: the generator's modules do without re, string and shlex (their
# imports were a quarter of its run). Each replacement is checked against
# what it replaced, on many generated inputs.

def _random_texts(alphabet: str, count: int = 20000, longest: int = 10) -> list[str]:
    import random

    chooser = random.Random(9)
    return [""] + ["".join(chooser.choice(alphabet) for _ in range(chooser.randint(1, longest))) for _ in range(count)]


def test_generator_imports_no_regex_modules() -> None:
    script = ("import sys; before = set(sys.modules); import sdoverlay.generator; "
              "print(' '.join(sorted(set(sys.modules) - before)))")
    result = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True, check=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(units.__file__))))
    imported = set(result.stdout.split())
    assert "sdoverlay.generator" in imported
    assert not imported & {"re", "string", "shlex", "dataclasses", "typing", "subprocess"}, imported


def _template_files() -> dict[str, str]:
    """The unit templates units.substitute fills in; not content@.service,
    the generator's systemd template, written as it is."""
    directory = os.path.dirname(units.__file__)
    texts = {}
    for name in sorted(os.listdir(directory)):
        if name.endswith((".mount", ".service")) and name != "content@.service":
            with open(os.path.join(directory, name), encoding="utf-8") as file:
                texts[name] = file.read()
    return texts


def test_substitute_renders_every_template_as_string_template_does() -> None:
    import string

    awkward = ["plain", "", "$HOME ${name} $$ 100%", "a\\b 'c' \"d\" }{", "ünï ç"]
    for name, text in _template_files().items():
        template = string.Template(text)
        assert template.is_valid(), name
        placeholders = template.get_identifiers()
        assert placeholders, name
        for value in awkward:
            values = {placeholder: f"{placeholder}:{value}" for placeholder in placeholders}
            assert units.substitute(text, values) == template.substitute(values), name


@pytest.mark.parametrize("template", ["$name", "$$", "${name", "${na-me}", "${}", "a $ b ${x}", "${ünï}"])
def test_substitute_refuses_what_it_does_not_render_like_string_template(template: str) -> None:
    with pytest.raises(ValueError):
        units.substitute(template, {"name": "x", "x": "y", "na": "z", "ünï": "u"})


def test_sh_quote_is_shlex_quote() -> None:
    for text in _random_texts("aZ09_@%+=:,./- '\"$\\\tü;*"):
        assert units.sh_quote(text) == shlex.quote(text)


def test_size_checks_match_their_former_regular_expressions() -> None:
    import re

    tmpfs_size = re.compile(r"[1-9][0-9]*[kKmMgG]?|[1-9][0-9]?%|100%")
    byte_size = re.compile(r"([0-9]+)([KMGT]?)", re.IGNORECASE)
    for text in _random_texts("0123456789kKmMgGtT% .-²", longest=5):
        assert sizes.is_tmpfs_size(text) == bool(tmpfs_size.fullmatch(text)), text
        match = byte_size.fullmatch(text.strip())
        if match:
            assert sizes.parse_bytes(text) == int(match.group(1)) * 1024 ** "_KMGT".index(
                match.group(2).upper() or "_"), text
        else:
            with pytest.raises(ValueError):
                sizes.parse_bytes(text)


def test_name_rules_match_their_former_regular_expressions() -> None:
    import re

    name_pattern = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}")
    for text in _random_texts("aZ09_-.ü/ ", longest=70) + ["a" * 64, "a" * 65, "-" + "a" * 63]:
        assert (paths.check_name(text) is None) == bool(name_pattern.fullmatch(text)), text
        target = "/" + text
        expected = "-".join(re.sub(r"[^A-Za-z0-9_]", "_", p) for p in target.split("/") if p) or "root"
        assert paths.default_unlock_name(target) == expected[:64], text


def test_mountinfo_unescape_matches_its_former_regular_expression() -> None:
    import re

    for text in _random_texts("\\\\01789a ", longest=12):
        expected = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)
        assert mountinfo._unescape(text) == expected, text


def _list_records() -> list[dict[str, object]]:
    plain = OverlaySpec(name="a-b", target="/usr/share/doc/x y", source=None, read_only=False, size="25%",
                        owner_uid=1000, created_at="2026-11-28T02:25:42Z", kind="mount", lazy_unmount=False)
    layered = plain._replace(name="c", source="/srv/\u00e9t\u00e9\t\"q\"\\:/srv/two", read_only=True,
                             kind="service", session="3", dropin="/etc/sdoverlay/c.conf")
    return [OverlayStatus(plain, "active", 1 << 30, None, 4096).to_json(),
            OverlayStatus(layered, "degraded", None, "not mounted on /usr/share/doc/x y").to_json()]


@pytest.mark.parametrize("records", [
    [], [{}], [{"a": []}], [{"k": [None, True, False, 0, -7, 10**20, "\u2603\x00\n"]}, {}],
    _list_records(), _list_records() * 3,
])
def test_pretty_json_writes_what_json_dumps_writes(records: list[dict[str, object]]) -> None:
    import json

    # _records itself, not dumps: a fallback to json.dumps would pass this trivially.
    assert prettyjson._records(records) == json.dumps(records, indent=2)
    assert prettyjson.dumps(records) == json.dumps(records, indent=2)


class _Number(int):
    pass


@pytest.mark.parametrize("value", [
    [{"a": 1.5}], [{"a": {"b": 1}}], [{"a": [[1]]}], [{1: "x"}], [{"a": _Number(3)}], [{"a": (1, 2)}],
])
def test_pretty_json_leaves_other_shapes_to_json_dumps(value: object) -> None:
    import json

    with pytest.raises(TypeError):
        prettyjson._records(value)  # type: ignore[arg-type]
    assert prettyjson.dumps(value) == json.dumps(value, indent=2)


@pytest.mark.parametrize("value", [{"a": [1]}, "text", None, [1, 2], [{"a": 1}, [2]]])
def test_pretty_json_of_anything_but_a_list_of_records_is_json_dumps(value: object) -> None:
    import json

    assert prettyjson.dumps(value) == json.dumps(value, indent=2)


def test_list_runs_without_the_cyclic_collector_and_gives_it_back(monkeypatch) -> None:
    import gc

    from sdoverlay import cli

    seen = []

    def failing_list(uid, as_json) -> None:
        seen.append(gc.isenabled())
        raise RuntimeError("no bus here")

    monkeypatch.setattr(cli, "_list", failing_list)
    assert gc.isenabled()
    with pytest.raises(RuntimeError):
        cli.list_.callback(uid=None, as_json=False)
    assert seen == [False] and gc.isenabled()


def test_a_kernel_line_that_quotes_only_other_paths_is_not_the_overlays() -> None:
    """Another shell's failing mount logs meanwhile: its overlayfs line,
    which quotes its own paths, is not this overlay's reason."""
    dirs = ("/usr/share/doc", "/run/usroverlay/doc", "/var/lib/sdoverlay/doc")
    assert not diagnostics._may_be_about("overlayfs: failed to resolve '/nonexistent': -2", dirs)
    assert not diagnostics._may_be_about("overlayfs: failed to resolve '/run/usroverlay/docs/upper': -2", dirs)
    assert diagnostics._may_be_about("overlayfs: failed to resolve '/usr/share/doc': -2", dirs)
    assert diagnostics._may_be_about(
        "overlayfs: fs on '/run/usroverlay/doc/upper' does not support file handles, falling back to index=off", dirs)
    assert diagnostics._may_be_about("overlayfs: maximum fs stacking depth exceeded", dirs)
