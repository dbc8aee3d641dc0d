"""A generic adapter configured in YAML by a regex with named groups.

Required groups: ``plate`` and ``well`` (or ``row`` and ``col``); optional: ``drop``,
``inspection``. The regex is searched in the path relative to the watched folder.

    adapters:
      regex:
        - name: mylab
          pattern: '(?P<plate>[A-Z0-9]+)/(?P<well>[A-P]\\d{2})_d(?P<drop>\\d)\\.png$'
"""

from __future__ import annotations

import re

from xtalwatch.plate import ImageIdentity, Imaging, parse_well


def _number(text: str | None) -> int | None:
    """A group's whole number (ASCII digits, up to 18 of them, so SQLite can store it); ValueError otherwise."""
    if not text:
        return None
    if not (text.isascii() and text.isdigit() and len(text) <= 18):
        raise ValueError(f"{text!r} is not a number")
    return int(text)


class RegexAdapter:
    name = "regex"
    kind = "adapter"

    def __init__(self, pattern: str, name: str = "regex", imaging: Imaging = "visible"):
        self.pattern = re.compile(pattern)
        self.name = name
        self.imaging = imaging

    def parse(self, relpath: str) -> ImageIdentity | None:
        match = self.pattern.search(relpath)
        if match is None:
            return None
        groups = match.groupdict()
        if not groups.get("plate"):
            return None
        try:
            well = parse_well(groups["well"]) if groups.get("well") else None
            drop, inspection = _number(groups.get("drop")), _number(groups.get("inspection"))
        except ValueError:  # a lab's pattern may let through what is no well or no number
            return None
        return ImageIdentity(
            plate=groups["plate"],
            well=well,
            drop=drop,
            inspection=inspection,
            imaging=self.imaging,
            adapter=self.name,
        )
