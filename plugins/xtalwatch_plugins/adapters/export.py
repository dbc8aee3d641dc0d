"""The common export naming ``<barcode>_<col><row>_<drop>.<ext>``, e.g. ``90j8_01A_1.jpg``.

The inspection is not in the name; when a parent folder is called ``inspection_3``,
``insp3`` or ``i03``, that number is used, otherwise the inspection is left unknown.
"""

from __future__ import annotations

import re

from xtalwatch.plate import ImageIdentity, parse_well

# ASCII digits only, and few enough for SQLite's INTEGER: any other name is not this export's.
_NAME = re.compile(r"^(?P<plate>[A-Za-z0-9-]+)_(?P<col>\d{1,2})(?P<row>[A-Za-z]{1,2})_(?P<drop>\d{1,9})\.[A-Za-z0-9]+$",
                   re.ASCII)
_INSPECTION_DIR = re.compile(r"^(?:inspection|insp|i)[_-]?(\d{1,9})$", re.IGNORECASE | re.ASCII)


class ExportAdapter:
    name = "export"
    kind = "adapter"

    def parse(self, relpath: str) -> ImageIdentity | None:
        *folders, filename = relpath.split("/")
        match = _NAME.match(filename)
        if match is None:
            return None
        try:
            well = parse_well(f"{match['row']}{int(match['col'])}")
        except ValueError:
            return None
        inspection = None
        for folder in reversed(folders):
            found = _INSPECTION_DIR.match(folder)
            if found:
                inspection = int(found.group(1))
                break
        return ImageIdentity(plate=match["plate"], well=well, drop=int(match["drop"]), inspection=inspection,
                             adapter=self.name)
