"""Rigaku Minstrel image names, as the instrument writes them.

Example: ``RMM3_01_470_RGKU_Test1_Clon1_FB_0000FB000000_003_081218_01_03_02_E0_99_030_001_RDI.jpg``

Read from the right, after the free-text prefix (instrument, project, clone, plate type):
the 12-character plate barcode, the inspection number, the date (yymmdd), row and column
(1-based, two digits), the drop, then the focus/imaging fields; the last token is the imaging
type (``RDI`` visible; a token containing ``UV`` is UV).
"""

from __future__ import annotations

import re
from datetime import datetime

from xtalwatch.plate import ImageIdentity, well_name

_NAME = re.compile(
    r"^(?P<prefix>.+?)_(?P<plate>[0-9A-Z]{12})_(?P<inspection>\d{3})_(?P<date>\d{6})_(?P<row>\d{2})_(?P<col>\d{2})"
    r"_(?P<drop>\d{2})_(?P<tail>(?:[0-9A-Z]+_)*(?P<mode>[0-9A-Za-z]+))\.[A-Za-z0-9]+$",
    re.ASCII,  # digits are 0-9 only
)


class MinstrelAdapter:
    name = "minstrel"
    kind = "adapter"

    def parse(self, relpath: str) -> ImageIdentity | None:
        match = _NAME.match(relpath.rsplit("/", 1)[-1])
        if match is None:
            return None
        row, col = int(match["row"]), int(match["col"])
        if not (1 <= row <= 32 and 1 <= col <= 48):
            return None
        try:
            imaged_at = datetime.strptime(match["date"], "%y%m%d")
        except ValueError:
            imaged_at = None
        mode = match["mode"].upper()
        return ImageIdentity(
            plate=match["plate"],
            well=well_name(row - 1, col),
            drop=int(match["drop"]),
            inspection=int(match["inspection"]),
            imaged_at=imaged_at,
            imaging="uv" if "UV" in mode else "visible",
            adapter=self.name,
        )
