"""sdoverlay.changes on plain dirs laid out as overlayfs lays out its layers
(whiteouts and opaque dirs made as the kernel makes them; needs root for
mknod and trusted.* xattrs, like the suite). The real overlays are in
tests/test_overlays.py."""

from __future__ import annotations

import os
from pathlib import Path

from sdoverlay.changes import Change, change_from_json, compute


def whiteout(path: Path) -> None:
    os.mknod(path, 0o600 | 0o020000, os.makedev(0, 0))


def xattr_whiteout(path: Path) -> None:
    """The other whiteout (kernel 6.7+, for nested overlays): an empty file with an xattr."""
    path.write_bytes(b"")
    os.setxattr(path, "trusted.overlay.whiteout", b"")


def opaque(path: Path) -> None:
    os.setxattr(path, "trusted.overlay.opaque", b"y")


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith("/"):
            path.mkdir(exist_ok=True)
        else:
            path.write_text(text)
    return root


def short(changes: list[Change]) -> list[tuple[str, str, str]]:
    return [(c.change, c.path, c.type) for c in changes]


def test_every_kind_of_change_against_the_original(tmp_path: Path) -> None:
    original = tree(tmp_path / "lower", {"keep": "same", "edit": "old", "gone": "x", "olddir/a": "1",
                                         "olddir/b": "2", "chmod": "m", "swap": "file", "emptied/x": "y",
                                         "sub/deep/file": "d", "link-target": "t"})
    os.symlink("link-target", original / "link")
    os.chmod(original / "chmod", 0o644)
    upper = tree(tmp_path / "upper", {"edit": "new", "new/inner": "i", "chmod": "m", "swap/": "",
                                      "emptied/fresh": "f", "sub/deep/added": "a", "same-copy": "",
                                      "keep": "same"})
    os.symlink("elsewhere", upper / "link")
    os.chmod(upper / "chmod", 0o600)
    whiteout(upper / "gone")
    xattr_whiteout(upper / "olddir")
    whiteout(upper / "never-was")  # deleted something that only an upper layer had: no change
    opaque(upper / "emptied")
    os.chmod(upper / "keep", os.stat(original / "keep").st_mode)  # copied up, unchanged: no change
    (upper / "same-copy").unlink()

    changes = compute([str(upper)], str(original), "/usr/x")

    assert short(changes) == [
        ("modified", "/usr/x/chmod", "file"),
        ("modified", "/usr/x/edit", "file"),
        ("replaced", "/usr/x/emptied", "dir"),
        ("added", "/usr/x/emptied/fresh", "file"),
        ("deleted", "/usr/x/gone", "file"),
        ("modified", "/usr/x/link", "symlink"),
        ("added", "/usr/x/new", "dir"),
        ("added", "/usr/x/new/inner", "file"),
        ("deleted", "/usr/x/olddir", "dir"),
        ("added", "/usr/x/sub/deep/added", "file"),
        ("replaced", "/usr/x/swap", "dir"),
    ]
    by_path = {c.path: c for c in changes}
    assert by_path["/usr/x/chmod"].what == ("mode",)
    assert by_path["/usr/x/edit"].what == ("content",)
    assert by_path["/usr/x/swap"].previous_type == "file"
    assert by_path["/usr/x/edit"].size == 3
    for change in changes:
        assert change_from_json(change.to_json()) == change


def test_applied_content_counts_and_the_upper_layer_wins(tmp_path: Path) -> None:
    original = tree(tmp_path / "lower", {"a": "orig", "dir/x": "x"})
    content = tree(tmp_path / "content", {"a": "from source", "b": "source only", "dir/y": "y", "c": "c"})
    upper = tree(tmp_path / "upper", {"b": "edited after apply", "dir/": ""})
    whiteout(upper / "c")  # the user deleted what SOURCE added: nothing against the original
    whiteout(upper / "dir" / "x")

    changes = compute([str(upper), str(content)], str(original), "/t")

    assert short(changes) == [
        ("modified", "/t/a", "file"),
        ("added", "/t/b", "file"),
        ("deleted", "/t/dir/x", "file"),
        ("added", "/t/dir/y", "file"),
    ]
    assert [c.size for c in changes if c.path == "/t/b"] == [len("edited after apply")]


def test_a_non_dir_hides_the_layers_below_and_an_opaque_dir_stops_the_merge(tmp_path: Path) -> None:
    original = tree(tmp_path / "lower", {"d/old": "o"})
    content = tree(tmp_path / "content", {"d/from-content": "c", "f/inner": "i"})
    upper = tree(tmp_path / "upper", {"d/top": "t", "f": "now a file"})
    opaque(upper / "d")

    changes = compute([str(upper), str(content)], str(original), "/t")

    assert short(changes) == [("replaced", "/t/d", "dir"), ("added", "/t/d/top", "file"), ("added", "/t/f", "file")]


def test_nothing_written_is_no_change(tmp_path: Path) -> None:
    original = tree(tmp_path / "lower", {"a": "1", "d/b": "2"})
    upper = tree(tmp_path / "upper", {"d/": ""})
    os.chmod(upper / "d", os.stat(original / "d").st_mode)
    assert compute([str(upper)], str(original), "/t") == []
