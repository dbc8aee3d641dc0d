"""Formulatrix Rock Maker's image store.

``.../plateID_<id>/batchID_<batch>/wellNum_<n>/profileID_<p>/d<drop>_r<region>_<type>.<ext>``

Rock Maker numbers wells 1..N row-major over the plate, so the plate format is needed to name
the well (96 by default). Each imaging batch is one inspection; batch ids only grow, so they
order inspections in time. The image type ``ef`` is the extended-focus visible image; types
containing ``uv`` are UV images.
"""

from __future__ import annotations

import re

from xtalwatch.plate import ImageIdentity, well_from_index

# ASCII digits only, and no more of them than SQLite's INTEGER holds: any other path is not Rock Maker's.
_PATH = re.compile(
    r"(?:^|/)plateID_(?P<plate>[^/]+)/batchID_(?P<batch>\d{1,18})/wellNum_(?P<well>\d{1,4})/profileID_(?P<profile>\d+)/"
    r"d(?P<drop>\d{1,9})_r(?P<region>\d+)_(?P<type>[A-Za-z0-9]+)\.[A-Za-z0-9]+$",
    re.ASCII,
)


class RockMakerAdapter:
    name = "rockmaker"
    kind = "adapter"

    def __init__(self, plate_wells: int = 96):
        self.plate_wells = plate_wells

    def parse(self, relpath: str) -> ImageIdentity | None:
        match = _PATH.search(relpath)
        if match is None:
            return None
        try:
            well = well_from_index(int(match["well"]), self.plate_wells)
        except ValueError:  # wellNum_0, or past the plate's last well
            return None
        kind = match["type"].lower()
        imaging = "uv" if "uv" in kind else ("visible" if kind in {"ef", "vis", "bf", "sl"} else "other")
        return ImageIdentity(
            plate=match["plate"],
            well=well,
            drop=int(match["drop"]),
            inspection=int(match["batch"]),
            imaging=imaging,
            adapter=self.name,
        )
