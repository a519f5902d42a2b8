"""The CLI's blocking reads (sdoverlay.blocking, sdoverlay.dbuscodec): pure logic
and what they import. Their use against a real systemd is every `list` and
`status` in the behaviour tests (tests/test_scale.py counts their calls)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sdoverlay import blocking
from sdoverlay.errors import OperationFailed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(script: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **(env or {})}, check=False)


@pytest.mark.parametrize("address, path", [
    (None, "/run/dbus/system_bus_socket"),
    ("unix:path=/run/dbus/system_bus_socket", "/run/dbus/system_bus_socket"),
    ("tcp:host=localhost,port=1;unix:guid=x,path=/tmp/a%20b%2c", "/tmp/a b,"),
])
def test_system_bus_path(address: str | None, path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DBUS_SYSTEM_BUS_ADDRESS", raising=False)
    if address is not None:
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", address)
    assert blocking.system_bus_path() == path


def test_system_bus_path_other_transports_are_refused() -> None:
    with pytest.raises(OperationFailed, match="no unix:path="):
        blocking.system_bus_path("unix:abstract=/x;tcp:host=h,port=1")


def test_run_drives_a_coroutine_that_never_suspends_and_refuses_one_that_does() -> None:
    async def inner() -> int:
        return 41

    async def outer() -> int:
        return await inner() + 1

    assert blocking.run(outer()) == 42

    class Suspends:
        def __await__(self):
            yield None

    async def waits() -> None:
        await Suspends()

    with pytest.raises(RuntimeError, match="event loop"):
        blocking.run(waits())


@pytest.mark.parametrize("argv, module", [
    (["list"], "sdoverlay.status"),
    (["status", "doc"], "sdoverlay.details"),
    (["remove", "doc"], "sdoverlay.client"),
    (["unlock", "/usr/share/doc"], "sdoverlay.client"),
])
def test_the_cli_imports_neither_asyncio_nor_the_rest_of_dbus_next(argv: list[str], module: str) -> None:
    """Issue 9: start-up is imports. The bus address names no socket, so the
    verb fails after its imports, with its one line."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "sdoverlay", *argv], capture_output=True,
                            text=True, cwd=REPO, check=False,
                            env={**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/nonexistent/bus"})
    assert result.returncode == 1
    assert "cannot connect to the system bus: " in result.stderr.splitlines()[-1], result.stderr[-500:]
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert module in imported and "dbus_next.message" in imported
    assert not imported & {"asyncio", "dbus_next", "dbus_next.aio", "xml.etree.ElementTree", "urllib.parse", "ssl"}


def test_codec_loaded_first_is_the_one_the_whole_package_uses() -> None:
    """The service (or `remove --all`, which lists first) imports all of
    dbus_next after the codec: one Message, one Variant, and the package's
    submodules bound to it."""
    result = _python(
        "import sdoverlay.dbuscodec as codec, sdoverlay.dbusnext as full, dbus_next, sys\n"
        "assert 'asyncio' in sys.modules and 'ssl' not in sys.modules\n"
        "assert full.Message is codec.Message is dbus_next.Message and full.Variant is codec.Variant\n"
        "assert dbus_next.message is sys.modules['dbus_next.message']\n"
        "message = codec.Message(destination='a.b', path='/a', interface='a.b', member='C', signature='av',\n"
        "                        body=[[full.Variant('s', 'x')]], serial=7)\n"
        "import io\n"
        "again = codec.Unmarshaller(io.BytesIO(message._marshall())).unmarshall()\n"
        "assert again.body == message.body and again.serial == 7, again.body\n"
        "print('ok')\n")
    assert result.stdout.strip() == "ok", result.stderr
