"""Labels into the catalogue: a CSV (path or image id, class, labeller) or an ImageFolder (DIR/<class>/*).

Rows are parsed (:func:`parse_csv`, :func:`rows_from_imagefolder`) and checked against the catalogue
(:func:`check_rows`, which only reads); only :func:`apply` writes.
An import is all or nothing: every bad line is reported with its line number (unknown class,
unknown image, the same image given two classes), and nothing is written until there are none.
Fine crystal habits (``needles``...) are stored as given; ``classify.subclasses`` folds them onto
``crystals`` when a model is trained.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from xtalwatch.config import IMAGE_EXTENSIONS, ClassifyConfig
from xtalwatch.store.catalogue import (
    Db,
    fetch_rows,
    fetch_value,
    image_id_by_id,
    image_id_by_path,
    image_id_by_sha256,
    writing,
)

__all__ = ["LabelRow", "LabelError", "ImportResult", "parse_csv", "rows_from_imagefolder", "check_rows", "apply",
           "import_labels", "stored_label", "insert_label", "latest_labels", "set_label", "remove_label", "label_count",
           "labels_of_image", "UnlabelledCall", "unlabelled_calls", "sha256_of", "crop_paths_of"]


@dataclass(frozen=True)
class LabelRow:
    line: int  # 1-based line in the CSV (or index of the file for an ImageFolder)
    ref: str  # image id, or path
    label: str
    labeller: str
    source: str = ""  # the file the row came from, for messages


@dataclass(frozen=True)
class LabelError:
    line: int
    message: str
    source: str = ""

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.message}" if self.source else f"line {self.line}: {self.message}"


@dataclass
class ImportResult:
    added: int = 0
    changed: int = 0  # never > 0 today: a different class for the same (image, labeller) is an error
    unchanged: int = 0
    errors: list[LabelError] = field(default_factory=list)


_HEADER_WORDS = {"path", "image", "image_id", "id", "file", "class", "label"}


def parse_csv(path: Path, default_labeller: str = "") -> tuple[list[LabelRow], list[LabelError]]:
    """Rows of ``path or image id, class[, labeller]``; a header line is recognised and skipped."""
    rows, errors = [], []
    src = str(path)
    with open(path, newline="", encoding="utf-8-sig") as f:
        for lineno, rec in enumerate(csv.reader(f), start=1):
            if not rec or all(not c.strip() for c in rec) or rec[0].lstrip().startswith("#"):
                continue
            rec = [c.strip() for c in rec]
            if lineno == 1 and rec[0].lower() in _HEADER_WORDS and len(rec) > 1 and rec[1].lower() in _HEADER_WORDS:
                continue
            if len(rec) < 2 or not rec[0] or not rec[1]:
                errors.append(LabelError(lineno, f"expected 'path or image id, class[, labeller]', got {rec}", src))
                continue
            rows.append(LabelRow(lineno, rec[0], rec[1], rec[2] if len(rec) > 2 and rec[2] else default_labeller, src))
    return rows, errors


def rows_from_imagefolder(root: Path, labeller: str) -> list[LabelRow]:
    """One row per image file under ``root/<class>/``; the reference is the file's path."""
    exts = {"." + e for e in IMAGE_EXTENSIONS}
    files = sorted(p for p in Path(root).glob("*/*") if p.is_file() and p.suffix.lower() in exts)
    return [LabelRow(i, str(p), p.parent.name, labeller, str(root)) for i, p in enumerate(files, start=1)]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _resolve(db: Db, ref: str, watch_dir: Path | None, base: Path | None) -> int | None:
    """An image id from an id, a catalogued path (absolute, or relative to the watch folder or
    the CSV's folder), or the content of a file that exists (its sha256)."""
    if ref.isdigit():
        return image_id_by_id(db, int(ref))
    candidates = [Path(ref)]
    if not Path(ref).is_absolute():
        candidates += [d / ref for d in (watch_dir, base) if d is not None]
    for c in candidates:
        for key in {str(c), str(c.resolve()) if c.exists() else str(c)}:
            hit = image_id_by_path(db, key)
            if hit is not None:
                return int(hit)
    for c in candidates:
        if c.is_file():
            hit = image_id_by_sha256(db, _sha256(c))
            if hit is not None:
                return int(hit)
    return None


def check_rows(db: Db, rows: list[LabelRow], cfg: ClassifyConfig, watch_dir: Path | None = None,
               base: Path | None = None) -> tuple[list[tuple[LabelRow, int]], list[LabelError]]:
    """Resolve each row to an image and check it; (good rows with their image id, errors)."""
    good: list[tuple[LabelRow, int]] = []
    errors: list[LabelError] = []
    seen: dict[tuple[int, str], LabelRow] = {}
    for row in rows:
        if cfg.class_of(row.label) is None:
            errors.append(LabelError(row.line, f"unknown class {row.label!r} (classes: {', '.join(cfg.classes)}; "
                                               f"sub-classes: {', '.join(sorted(cfg.subclass_of))})", row.source))
            continue
        image_id = _resolve(db, row.ref, watch_dir, base)
        if image_id is None:
            errors.append(LabelError(row.line, f"unknown image {row.ref!r} (not an image id, a catalogued path, "
                                               "or a file whose content is catalogued)", row.source))
            continue
        prev = seen.get((image_id, row.labeller))
        if prev is not None and prev.label != row.label:
            errors.append(LabelError(row.line, f"duplicate: image {image_id} ({row.ref}) is {row.label!r} here but "
                                               f"{prev.label!r} on line {prev.line}", row.source))
            continue
        stored = stored_label(db, image_id, row.labeller)
        if stored is not None and stored != row.label:
            errors.append(LabelError(row.line, f"duplicate: image {image_id} ({row.ref}) is already labelled "
                                               f"{stored!r} by {row.labeller or 'the default labeller'!r}, "
                                               f"not {row.label!r}", row.source))
            continue
        seen[(image_id, row.labeller)] = row
        good.append((row, image_id))
    return good, errors


def apply(db: Db, good: list[tuple[LabelRow, int]]) -> ImportResult:
    """Write checked rows in one transaction; a row already stored with the same class is unchanged."""
    result = ImportResult()
    now = time.time()
    with writing(db) as conn:
        for row, image_id in good:
            if insert_label(conn, image_id, row.label, row.labeller, now):
                result.added += 1
            else:
                result.unchanged += 1
    return result


def import_labels(db: Db, source: Path, cfg: ClassifyConfig, *, labeller: str = "",
                  watch_dir: Path | None = None) -> ImportResult:
    """Import a CSV file or an ImageFolder; nothing is written when any line has an error."""
    source = Path(source)
    if source.is_dir():
        rows, errors = rows_from_imagefolder(source, labeller or "imagefolder"), []
        base = source
    elif source.is_file():
        rows, errors = parse_csv(source, labeller)
        base = source.parent
    else:
        raise FileNotFoundError(f"no such file or folder: {source}")
    good, more = check_rows(db, rows, cfg, watch_dir, base)
    errors += more
    if errors:
        return ImportResult(errors=sorted(errors, key=lambda e: e.line))
    return apply(db, good)


# -- the labels table ----------------------------------------------------------------------------
def stored_label(db: Db, image_id: int, labeller: str) -> str | None:
    """The class ``labeller`` gave the image, or None."""
    return fetch_value(db, "SELECT label FROM labels WHERE image_id=? AND labeller=?", (image_id, labeller))


def insert_label(db: Db, image_id: int, label: str, labeller: str, created_at: float) -> bool:
    """Store one label (``created_at`` in Unix s); False when this labeller had already labelled the image."""
    with writing(db) as conn:
        cursor = conn.execute("INSERT INTO labels (image_id, label, labeller, created_at) VALUES (?, ?, ?, ?) "
                              "ON CONFLICT DO NOTHING",
                              (image_id, label, labeller, created_at))
        return bool(cursor.rowcount)


def latest_labels(cat: Db) -> dict[int, str]:
    """image id → its most recent label (any labeller), as stored (fine names kept; ``learn.bundle.map_labels``
    folds them).

    ``cat`` is the service's ``Catalogue`` or any connection to it (a read-only one will do).
    """
    rows = fetch_rows(cat, "SELECT image_id, label FROM labels ORDER BY created_at, id")
    return {int(r[0]): str(r[1]) for r in rows}


def set_label(db: Db, image_id: int, label: str, labeller: str, created_at: float) -> str | None:
    """Give the image ``label`` from ``labeller`` (one label per image and labeller: a second one replaces
    the first); returns the label it replaced, or None. ``created_at`` in Unix s.

    The browser's labels land here, in the same table as ``labels import``.
    """
    with writing(db) as conn:
        previous = conn.execute("SELECT label FROM labels WHERE image_id=? AND labeller=?",
                                (image_id, labeller)).fetchone()
        conn.execute("INSERT INTO labels (image_id, label, labeller, created_at) VALUES (?, ?, ?, ?) "
                     "ON CONFLICT(image_id, labeller) DO UPDATE SET label=excluded.label, "
                     "created_at=excluded.created_at", (image_id, label, labeller, created_at))
    return None if previous is None else str(previous[0])


def remove_label(db: Db, image_id: int, labeller: str) -> str | None:
    """Delete ``labeller``'s label of the image (an undo); returns the label removed, or None."""
    with writing(db) as conn:
        previous = conn.execute("SELECT label FROM labels WHERE image_id=? AND labeller=?",
                                (image_id, labeller)).fetchone()
        conn.execute("DELETE FROM labels WHERE image_id=? AND labeller=?", (image_id, labeller))
    return None if previous is None else str(previous[0])


def label_count(db: Db) -> int:
    """Labels in the catalogue (every labeller's)."""
    return int(fetch_value(db, "SELECT COUNT(*) FROM labels"))


def labels_of_image(db: Db, image_id: int) -> list[dict]:
    """Every label of one image, oldest first: ``{label, labeller, created_at}``."""
    rows = fetch_rows(db, "SELECT label, labeller, created_at FROM labels WHERE image_id=? ORDER BY created_at, id",
                      (image_id,))
    return [{"label": r[0], "labeller": r[1], "created_at": float(r[2])} for r in rows]


# -- what the review queue and the head re-fit read --------------------------------------------
@dataclass(frozen=True)
class UnlabelledCall:
    """An image nobody has labelled, with its newest call."""

    image_id: int
    label: str  # the predicted class
    confidence: float
    probabilities: dict[str, float]
    uncertain: bool
    model_version: str
    flags: str  # preprocessing's quality flags, comma-separated ('' when none)


def unlabelled_calls(db: Db, model_version: str | None = None) -> list[UnlabelledCall]:
    """The newest call of every image with a crop and no label, oldest image first.

    ``model_version`` keeps only images whose newest call is that model's; None: any model's
    (a freshly swapped head has re-classified few images yet; the older call still says what
    the image looks like).
    """
    sql = """SELECT p.image_id, p.label, p.confidence, p.probabilities, p.uncertain, p.model_version, pp.flags
             FROM predictions p
             JOIN (SELECT image_id, MAX(id) AS id FROM predictions GROUP BY image_id) newest ON newest.id = p.id
             JOIN preprocess pp ON pp.image_id = p.image_id
             WHERE pp.crop_path IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM labels l WHERE l.image_id = p.image_id)"""
    params: tuple = ()
    if model_version is not None:
        sql += " AND p.model_version = ?"
        params = (model_version,)
    rows = fetch_rows(db, sql + " ORDER BY p.image_id", params)
    return [UnlabelledCall(int(r[0]), str(r[1]), float(r[2] or 0.0), json.loads(r[3]) if r[3] else {}, bool(r[4]),
                           str(r[5]), r[6] or "") for r in rows]


def _by_ids(db: Db, sql: str, image_ids: list[int]) -> dict[int, str]:
    """``sql`` (selecting id, value, with one ``{ids}`` placeholder) run over ``image_ids`` in chunks."""
    out: dict[int, str] = {}
    ids = [int(i) for i in image_ids]
    for start in range(0, len(ids), 900):  # SQLite's limit on bound parameters is 999 on old builds
        chunk = ids[start:start + 900]
        for r in fetch_rows(db, sql.format(ids=",".join("?" * len(chunk))), chunk):
            out[int(r[0])] = r[1]
    return out


def sha256_of(db: Db, image_ids: list[int]) -> dict[int, str]:
    """image id → its content hash (hex sha256), for the images that exist."""
    return _by_ids(db, "SELECT id, sha256 FROM images WHERE id IN ({ids})", image_ids)


def crop_paths_of(db: Db, image_ids: list[int]) -> dict[int, str]:
    """image id → its model-size crop PNG, for the images that have one."""
    return _by_ids(db, "SELECT image_id, crop_path FROM preprocess WHERE crop_path IS NOT NULL AND image_id IN ({ids})",
                   image_ids)
