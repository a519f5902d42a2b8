"""`apply --from FILE`: several overlays in drop-in syntax, all of them or none (issue 10).

FILE holds one [Overlay] section per overlay, with the keys of a drop-in
(man:sdoverlay.d(5)); Name= and Target= are required, a section without
Source= is an unlock. Persistent= is refused: a batch is transient, and a
persistent overlay is a drop-in in /etc/sdoverlay.d (or `persist` after).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sdoverlay import dropin, ini
from sdoverlay.dropin import DropinError
from sdoverlay.errors import InvalidInput, SdoverlayError, as_sdoverlay_error


@dataclasses.dataclass(frozen=True)
class Entry:
    verb: str  # apply or unlock
    name: str
    target: str
    source: str | None
    options: dict[str, Any]


def parse(text: str) -> list[Entry]:
    try:
        sections = [section for section in ini.parse_sections(text) if section[1] or section[0]]
    except ValueError as error:
        raise InvalidInput(f"cannot read the batch: {error}") from error
    if not sections:
        raise InvalidInput(f"the batch has no [{dropin.SECTION}] section")
    entries: list[Entry] = []
    for index, (section, pairs) in enumerate(sections):
        where = f"overlay {index + 1} of {len(sections)}"
        try:
            values = dropin.values([(section, key, value) for key, value in pairs])
            for key in ("Name", "Target"):
                if not values.get(key):
                    raise DropinError(f"{key}= is missing")
            if "Image" in values:
                raise DropinError("Image= is what persist records in the drop-ins it writes; a batch is transient")
            if dropin.boolean(values, "Persistent"):
                raise DropinError("Persistent=yes is for drop-ins in /etc/sdoverlay.d; a batch is transient "
                                  "(persist its overlays afterwards)")
            dropin.check(values)
            source = values.get("Source") or None
            options: dict[str, Any] = dict(dropin.flags(values))
        except DropinError as error:
            raise InvalidInput(f"{where}: {error}; none was created") from error
        if "Size" in values:
            options["size"] = values["Size"]
        if any(entry.name == values["Name"] for entry in entries):
            raise InvalidInput(f"{where}: Name={values['Name']} is given twice; none was created")
        entries.append(Entry("apply" if source else "unlock", values["Name"], values["Target"], source, options))
    return entries


def in_batch(raised: Exception, index: int, entries: list[Entry], created: list[str],
             problems: list[str] | None = None) -> SdoverlayError:
    """RAISED for the overlay at INDEX, as one line that says what became of the others."""
    error = as_sdoverlay_error(raised)
    text = f"overlay {index + 1} of {len(entries)} ({entries[index].name}): {error.message}"
    if created:
        text += f"; removed again the {len(created)} created before it ({', '.join(created)})"
    else:
        text += "; none was created"
    if problems:
        text += "; could not remove " + "; ".join(problems) + " (see 'sdoverlay gc')"
    return type(error)(text)
