"""The ``models`` table: the catalogue's mirror of the model registry (``learn/registry.py`` owns the files)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from xtalwatch.store.catalogue import Db, fetch_rows, writing

__all__ = ["ModelRow", "upsert_models", "forget_model_path", "model_statuses"]


@dataclass(frozen=True)
class ModelRow:
    """What the catalogue keeps of one registered model."""

    version: str
    created_at: float  # Unix seconds
    status: str
    metrics: Mapping[str, Any]
    path: str | None


def upsert_models(db: Db, models: Iterable[ModelRow]) -> None:
    """Insert or update each model's row (idempotent)."""
    rows = [(m.version, m.created_at, m.status, json.dumps(dict(m.metrics)), m.path) for m in models]
    with writing(db) as conn:
        conn.executemany(
            """INSERT INTO models (version, created_at, status, metrics, path) VALUES (?, ?, ?, ?, ?)
               ON CONFLICT(version) DO UPDATE SET status=excluded.status, metrics=excluded.metrics,
               path=excluded.path""", rows)


def forget_model_path(db: Db, version: str) -> None:
    """The model's folder was pruned: keep its row, without a path."""
    with writing(db) as conn:
        conn.execute("UPDATE models SET path=NULL WHERE version=?", (version,))


def model_statuses(db: Db) -> list[tuple[str, str]]:
    """(version, status) of every registered model, oldest first."""
    return [(r[0], r[1]) for r in fetch_rows(db, "SELECT version, status FROM models ORDER BY created_at")]
