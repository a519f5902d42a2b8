from tests.testbed import Container
def test_scratch(bed: Container) -> None:
    bed.sh("mkdir -p /srv/src && echo hi > '/srv/src/f'")
    bed.sdoverlay("apply", "d1", "/srv/src", "/usr/share/doc", check=True)
    bed.sdoverlay("unlock", "/usr/share/man", check=True)
    print(bed.sh("cat /run/mount/utab; systemctl show -p Options run-usroverlay-d1.mount").stdout)
