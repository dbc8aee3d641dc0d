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
        try:
            well = parse_well(groups["well"]) if groups.get("well") else None
        except ValueError:
            return None
        return ImageIdentity(
            plate=groups["plate"],
            well=well,
            drop=int(groups["drop"]) if groups.get("drop") else None,
            inspection=int(groups["inspection"]) if groups.get("inspection") else None,
            imaging=self.imaging,
            adapter=self.name,
        )
