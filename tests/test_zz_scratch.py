from pathlib import Path
from tests.testbed import Container
from tests.test_boot import generator_dir, source_dir
def test_scratch(tmp_path: Path) -> None:
    dropins = tmp_path / "dropins"
    dropins.mkdir()
    (dropins / "doc.conf").write_text("[Overlay]\nTarget=/usr/share/doc\nSource=/srv/src\n")
    binds = (f"{generator_dir(tmp_path)}:/etc/systemd/system-generators", f"{dropins}:/etc/sdoverlay.d",
             f"{source_dir(tmp_path)}:/srv/src")
    with Container(binds=binds) as bed:
        print(bed.run(["journalctl", "-b", "--no-pager", "-u", "sdoverlay-boot.service", "-u", "usroverlay-doc-content.service", "-u", "usr-share-doc.mount"]).stdout)
        import time; time.sleep(1)
        print(bed.run(["findmnt", "-rn", "/usr/share/doc"], check=False).stdout)
        print(bed.run(["ls", "/run/usroverlay/doc/content"], check=False))
        print(bed.run(["systemctl", "status", "--no-pager", "usr-share-doc.mount", "run-usroverlay-doc.mount"], check=False).stdout)
        print(bed.run(["journalctl", "-b", "--no-pager", "-g", "usroverlay|usr-share-doc"], check=False).stdout)
