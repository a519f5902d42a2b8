"""The one definition of what an overlay's units look like.

The templates in this directory render unit files. The CLI turns them into
transient-unit properties (sdoverlay.unitfile); the generator writes them as
they are. Either way the units are the same.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jinja2

from sdoverlay.spec import OverlaySpec

_TEMPLATES = Path(__file__).parent


def unit_escape(value: str) -> str:
    """Quote '%' so systemd's specifier expansion leaves the value as it is."""
    return value.replace("%", "%%")


_environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_TEMPLATES),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,
)
_environment.filters["unit_escape"] = unit_escape


@dataclasses.dataclass(frozen=True)
class RenderedUnit:
    name: str
    text: str


def render(spec: OverlaySpec) -> tuple[RenderedUnit, RenderedUnit]:
    """The area (tmpfs) unit and the overlay unit of SPEC, in start order."""
    area = _environment.get_template("area.mount").render(spec=spec)
    overlay = _environment.get_template(f"overlay.{spec.kind}").render(spec=spec)
    return RenderedUnit(spec.area_unit, area), RenderedUnit(spec.overlay_unit, overlay)


def render_hold(spec: OverlaySpec) -> RenderedUnit:
    """The transient unit that pins SPEC's area while the overlay is not up."""
    return RenderedUnit(spec.hold_unit, _environment.get_template("hold.service").render(spec=spec))
