"""sdoverlay's D-Bus API: the one place for its names, methods and errors.

The service (sdoverlay.service) implements it; the CLI (sdoverlay.client)
calls it. Every method returns the outcome as a JSON text, the same that
`sdoverlay VERB --json` prints. Errors are org.sdoverlay.Overlays1.Error.*,
one per exit code, with the one-line message as their text.
"""

from __future__ import annotations

import signal

from sdoverlay.errors import (
    Conflict,
    ExitCode,
    InvalidInput,
    LimitExceeded,
    NotFound,
    OperationFailed,
    PermissionDenied,
    SdoverlayError,
)

BUS_NAME = "org.sdoverlay.Overlays1"
OBJECT_PATH = "/org/sdoverlay/Overlays1"
INTERFACE = "org.sdoverlay.Overlays1"
UNIT = "sdoverlay.service"

# method -> (input signature, argument names)
METHODS: dict[str, tuple[str, tuple[str, ...]]] = {
    "Apply": ("sssa{sv}", ("name", "source", "target", "options")),
    "Unlock": ("ssa{sv}", ("target", "name", "options")),
    "ApplyBatch": ("sa{sv}", ("dropin_text", "options")),
    "Reset": ("sa{sv}", ("name", "options")),
    "Remove": ("sa{sv}", ("name", "options")),
    "Persist": ("sa{sv}", ("name", "options")),
    "CollectGarbage": ("a{sv}", ("options",)),
    "Diff": ("sa{sv}", ("name", "options")),
    # COMMAND (argv) in a private overlay, as the caller, with the caller's
    # working dir, environment and stdin/stdout/stderr (passed as fds).
    "Run": ("sassashhha{sv}", ("name", "argv", "cwd", "environment", "stdin", "stdout", "stderr", "options")),
    # A signal for the caller's own run of NAME (Ctrl-C at the CLI).
    "SignalRun": ("sia{sv}", ("name", "signal", "options")),
}

_ERRORS: dict[int, tuple[str, type[SdoverlayError]]] = {
    ExitCode.FAILED: ("Failed", OperationFailed),
    ExitCode.INVALID: ("InvalidInput", InvalidInput),
    ExitCode.NOT_FOUND: ("NotFound", NotFound),
    ExitCode.CONFLICT: ("Conflict", Conflict),
    ExitCode.PERMISSION: ("PermissionDenied", PermissionDenied),
    ExitCode.LIMIT: ("LimitExceeded", LimitExceeded),
}
ERROR_PREFIX = f"{INTERFACE}.Error."
# What SignalRun passes on to a run's command: the CLI's Ctrl-C and the like
# (the command has no controlling terminal of its own: it runs in a unit).
RUN_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def error_name(error: SdoverlayError) -> str:
    return ERROR_PREFIX + _ERRORS[error.exit_code][0]


def error_from(name: str, text: str) -> SdoverlayError | None:
    """The SdoverlayError a D-Bus error of ours stands for; None if it is not ours."""
    for short, kind in _ERRORS.values():
        if name == ERROR_PREFIX + short:
            return kind(text)
    return None


def introspection_xml() -> str:
    methods = []
    for method, (signature, names) in METHODS.items():
        types = _split_signature(signature)
        args = "".join(f'<arg name="{arg}" type="{kind}" direction="in"/>' for arg, kind in zip(names, types))
        methods.append(f'<method name="{method}">{args}<arg name="outcome_json" type="s" direction="out"/></method>')
    return (
        '<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN" '
        '"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n'
        f'<node><interface name="{INTERFACE}">{"".join(methods)}</interface>'
        '<interface name="org.freedesktop.DBus.Introspectable"><method name="Introspect">'
        '<arg name="xml_data" type="s" direction="out"/></method></interface>'
        '<interface name="org.freedesktop.DBus.Peer"><method name="Ping"/><method name="GetMachineId">'
        '<arg name="machine_uuid" type="s" direction="out"/></method></interface></node>\n'
    )


def _split_signature(signature: str) -> list[str]:
    """'sasa{sv}' -> ['s', 'as', 'a{sv}'] (the complete types our methods use)."""
    types, index = [], 0
    while index < len(signature):
        if signature.startswith("a{sv}", index):
            types.append("a{sv}")
            index += 5
        elif signature.startswith("as", index):
            types.append("as")
            index += 2
        else:
            types.append(signature[index])
            index += 1
    return types
