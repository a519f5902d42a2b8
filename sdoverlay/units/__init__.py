"""The one definition of what an overlay's units look like.

The templates in this directory render unit files. The CLI turns them into
transient-unit properties (sdoverlay.unitfile); the generator writes them as
they are. Either way the units are the same.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import TYPE_CHECKING

from sdoverlay.spec import OverlaySpec

if TYPE_CHECKING:
    import jinja2

_TEMPLATES = Path(__file__).parent


def unit_escape(value: str) -> str:
    """Quote '%' so systemd's specifier expansion leaves the value as it is."""
    return value.replace("%", "%%")


@functools.cache
def _environment() -> jinja2.Environment:
    # Imported on first use: `list`, `remove` and `--help` render nothing and
    # need not pay for jinja2's import (about 15-45 ms here).
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    environment.filters["unit_escape"] = unit_escape
    return environment


@dataclasses.dataclass(frozen=True)
class RenderedUnit:
    name: str
    text: str


def render(spec: OverlaySpec) -> tuple[RenderedUnit, RenderedUnit]:
    """The area (tmpfs) unit and the overlay unit of SPEC, in start order."""
    area = _environment().get_template("area.mount").render(spec=spec)
    overlay = _environment().get_template(f"overlay.{spec.kind}").render(spec=spec)
    return RenderedUnit(spec.area_unit, area), RenderedUnit(spec.overlay_unit, overlay)


def render_hold(spec: OverlaySpec) -> RenderedUnit:
    """The transient unit that pins SPEC's area while the overlay is not up."""
    return RenderedUnit(spec.hold_unit, _environment().get_template("hold.service").render(spec=spec))
