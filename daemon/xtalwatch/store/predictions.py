"""The ``predictions`` table: one call per image and model version, and what still waits for one."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from xtalwatch.store.catalogue import Db, fetch_rows, writing

__all__ = ["Waiting", "SiteShare", "StoredCall", "waiting_for", "classified_ids", "predicted_ids", "insert_predictions",
           "newest_prediction_labels"]


@dataclass(frozen=True)
class Waiting:
    """A preprocessed image without a prediction from some model version."""

    image_id: int
    crop_path: str
    completed_at: float | None  # Unix seconds the file was complete on the imager's disk


@dataclass(frozen=True)
class StoredCall:
    """One prediction row to store."""

    image_id: int
    model_version: str
    label: str
    confidence: float
    probabilities: Mapping[str, float]
    uncertain: bool = False  # top probability below classify.uncertain_below


@dataclass(frozen=True)
class SiteShare:
    """On a site, which waiting images are one agent's to classify (see :func:`waiting_for`)."""

    imager: str
    agent: str
    alive_after: float  # an agent seen before this (Unix s) is gone


def waiting_for(db: Db, model_version: str, share: SiteShare | None = None) -> list[Waiting]:
    """Preprocessed images that ``model_version`` has not classified yet, oldest first.

    With ``share`` (a site), only the agent's own: images of its imager that it claimed, and
    finished images of its imager whose agent is gone (to reclassify them). Unfinished images of
    other or gone agents are the claimer's (``store/work.py``), so no two live agents take one.
    """
    imager, agent, alive_after = (share.imager, share.agent, share.alive_after) if share else (None, None, 0.0)
    rows = fetch_rows(db, """
        SELECT i.id, p.crop_path, i.completed_at FROM images i JOIN preprocess p ON p.image_id = i.id
        WHERE i.status = 'preprocessed' AND NOT EXISTS (
            SELECT 1 FROM predictions r WHERE r.image_id = i.id AND r.model_version = ?)
          AND (CAST(? AS TEXT) IS NULL OR (i.imager = ? AND (i.claimed_by = ? OR (
               EXISTS (SELECT 1 FROM predictions o WHERE o.image_id = i.id)
               AND NOT EXISTS (SELECT 1 FROM agents a WHERE a.name = i.claimed_by AND a.seen_at >= ?)))))
        ORDER BY i.id""", (model_version, imager, imager, agent, alive_after))
    return [Waiting(int(r[0]), r[1], r[2]) for r in rows]


def classified_ids(db: Db) -> set[int]:
    """Images that some model has classified."""
    return {int(r[0]) for r in fetch_rows(db, "SELECT DISTINCT image_id FROM predictions")}


def predicted_ids(db: Db, model_version: str, image_ids: Sequence[int]) -> set[int]:
    """Those of ``image_ids`` that ``model_version`` has already classified."""
    if not image_ids:
        return set()
    rows = fetch_rows(db, f"SELECT image_id FROM predictions WHERE model_version=? "
                          f"AND image_id IN ({','.join('?' * len(image_ids))})", (model_version, *image_ids))
    return {int(r[0]) for r in rows}


def insert_predictions(db: Db, calls: Iterable[StoredCall], created_at: float) -> None:
    """Store calls (``created_at`` in Unix seconds); a call already stored for its model version is kept."""
    rows = [(c.image_id, c.model_version, c.label, c.confidence, json.dumps(dict(c.probabilities)), int(c.uncertain),
             created_at) for c in calls]
    with writing(db) as conn:
        conn.executemany(
            """INSERT INTO predictions (image_id, model_version, label, confidence, probabilities,
               uncertain, created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING""", rows)


def newest_prediction_labels(db: Db) -> list[tuple[str, str]]:
    """(image path, class) of each classified image's newest prediction."""
    return [(r[0], r[1]) for r in fetch_rows(db, """
        SELECT i.path, p.label FROM images i JOIN predictions p ON p.image_id = i.id
        WHERE p.created_at = (SELECT MAX(created_at) FROM predictions WHERE image_id = i.id)""")]
