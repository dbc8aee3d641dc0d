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
           "import_labels", "stored_label", "insert_label", "latest_labels"]


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
        cursor = conn.execute("INSERT OR IGNORE INTO labels (image_id, label, labeller, created_at) VALUES (?, ?, ?, ?)",
                              (image_id, label, labeller, created_at))
        return bool(cursor.rowcount)


def latest_labels(cat: Db) -> dict[int, str]:
    """image id → its most recent label (any labeller), as stored (fine names kept; ``learn.bundle.map_labels``
    folds them).

    ``cat`` is the service's ``Catalogue`` or any connection to it (a read-only one will do).
    """
    rows = fetch_rows(cat, "SELECT image_id, label FROM labels ORDER BY created_at, id")
    return {int(r[0]): str(r[1]) for r in rows}
