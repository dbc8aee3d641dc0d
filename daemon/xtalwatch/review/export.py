"""A plate's per-well outcomes for a LIMS, as CSV or JSON: ``xtalwatch export`` and the plate page's links.

One row per well the plate has images in, in plate order (A1, A2, ... B1): the outcome the per-well
rule (``stages/well_outcome.py``) decides, its ``score`` (the class's strength in
``classify.outcome_order``, weakest 0), the class and confidence of the call that decided it, that
call's model version, image and inspection, and the ids of every image whose call the rule read.
A well without a reliable call has empty class, score and confidence.
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass
from typing import Any, Literal

from xtalwatch.config import Settings
from xtalwatch.plate import well_position
from xtalwatch.stages.well_outcome import OutcomeRule, plate_outcomes
from xtalwatch.store.catalogue import Db
from xtalwatch.store.outcomes import plate_wells
from xtalwatch.store.review import plate_by_barcode

__all__ = ["ExportRow", "UnknownPlate", "export_rows", "to_csv", "to_json", "render", "FORMATS", "COLUMNS"]

FORMATS = ("csv", "json")
Format = Literal["csv", "json"]
COLUMNS = ("plate", "well", "score", "class", "confidence", "model_version", "image_ids", "decided_by",
           "inspection")


class UnknownPlate(LookupError):
    """No plate with that barcode; the message is one line."""


@dataclass(frozen=True)
class ExportRow:
    """One well's outcome, as a LIMS reads it."""

    plate: str
    well: str
    score: int | None  # strength of the class in classify.outcome_order (weakest 0); None: no reliable call
    label: str | None  # the class ("class" in the files)
    confidence: float | None
    model_version: str | None
    image_ids: tuple[int, ...]  # every classified image of the well the rule read
    decided_by: int | None  # the image whose call decided the outcome
    inspection: int | None  # that image's inspection

    def to_dict(self) -> dict[str, Any]:
        return {"plate": self.plate, "well": self.well, "score": self.score, "class": self.label,
                "confidence": self.confidence, "model_version": self.model_version,
                "image_ids": list(self.image_ids), "decided_by": self.decided_by, "inspection": self.inspection}


def _plate_order(name: str) -> tuple[int, int, str]:
    try:
        row, column = well_position(name)
    except ValueError:
        return (1 << 16, 0, name)  # a name no adapter normalised ("unassigned"): last
    return (row, column, name)


def export_rows(db: Db, barcode: str, settings: Settings, *, inspection: int | None = None) -> list[ExportRow]:
    """Every well of plate ``barcode`` with its outcome, counting inspections up to ``inspection`` (None: all).

    Raises ``UnknownPlate`` when the catalogue has no such plate.
    """
    plate = plate_by_barcode(db, barcode)
    if plate is None:
        raise UnknownPlate(f"no plate {barcode!r} in the catalogue")
    rule = OutcomeRule.from_config(settings.classify)
    states = plate_outcomes(db, plate["id"], rule, settings.alerts.hit_min_confidence, inspection=inspection)
    rows = []
    for well_id, name in plate_wells(db, plate["id"]).items():
        state = states.get(well_id)
        outcome = state.outcome if state is not None else None
        call = outcome.call if outcome is not None else None
        label = outcome.label if outcome is not None else None
        rows.append(ExportRow(
            plate=plate["barcode"], well=name, score=rule.score(label) if label is not None else None, label=label,
            confidence=call.confidence if call is not None else None,
            model_version=call.model_version if call is not None else None,
            image_ids=state.image_ids if state is not None else (), decided_by=call.image_id if call is not None else None,
            inspection=call.inspection if call is not None else None))
    return sorted(rows, key=lambda r: _plate_order(r.well))


def to_csv(rows: list[ExportRow]) -> str:
    """A header line, then one line per well; image ids are joined with ``;``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        d = row.to_dict()
        d["image_ids"] = ";".join(str(i) for i in row.image_ids)
        writer.writerow(["" if d[c] is None else d[c] for c in COLUMNS])
    return out.getvalue()


def to_json(rows: list[ExportRow], barcode: str, inspection: int | None, *, now: float | None = None) -> str:
    """``{"plate", "inspection", "exported_at", "columns", "wells": [row, ...]}``."""
    return json.dumps({"plate": barcode, "inspection": inspection,
                       "exported_at": time.time() if now is None else now, "columns": list(COLUMNS),
                       "wells": [r.to_dict() for r in rows]}, indent=1) + "\n"


def render(db: Db, barcode: str, settings: Settings, fmt: Format, *, inspection: int | None = None) -> str:
    """The export of one plate as text in ``fmt``; ``UnknownPlate`` when there is none."""
    if fmt not in FORMATS:
        raise ValueError(f"export format must be one of {FORMATS}, got {fmt!r}")
    rows = export_rows(db, barcode, settings, inspection=inspection)
    return to_csv(rows) if fmt == "csv" else to_json(rows, barcode, inspection)
