"""Learning from labels in seconds: re-fit the serving head on cached features, gate it, serve it.

A label from the review page calls :meth:`HeadRefitter.request`; a worker thread waits until no
label has come for ``web.refit_debounce_seconds`` (a burst of key presses makes one re-fit) and
then, read top to bottom in :meth:`HeadRefitter.refit_now`:

1. the serving model (the registry's ``current``): its ``bundle.json`` and head, no encoder load;
2. every labelled image (``store.labels.latest_labels``, fine labels folded onto the classes) and
   its features under the serving encoder from the :class:`FeatureCache`; crops the cache lacks
   are embedded with the serving encoder (loaded only then) and put in the cache;
3. the hold-out chosen by content hash (``learn.gate.holdout_mask``), as retraining chooses it;
4. a candidate head fitted on the rest: for ``classify.head: auto`` linear and kNN compete on a
   stratified part of those labels (``heads.serving.choose_feature_head``, the choice recorded as
   ``head_selection``) and the winner is refitted on all of them; its temperature on the hold-out;
5. the gate (``learn.gate.measure`` + ``gate``): the candidate against the serving head scored
   on the same hold-out now, within ``retrain.gate_margin``;
6. the candidate, exactly the head the gate measured, becomes a new registry version sharing the
   encoder (``encoder.pt`` hard-linked, ``encoder_version`` kept); passed: it is promoted (the
   classify stage swaps it in on its next tick) and ``on_new_model(version)`` is told; failed: it
   is kept as a rejected version with the gate's reason.

The served head is fitted outside the hold-out, as retraining's is, and not re-fitted on every
label: the next re-fit scores the serving head on the same hold-out, and a head that had seen
those images would win every comparison (measured: the second of two re-fits in a row was
rejected). The hold-out is 20 % of the labels; each label still teaches, in one of the two roles.

A fine-tune is never made here: it needs the crops and minutes of CPU, so retraining makes it.
When a fine-tuned model serves, the re-fitted linear or kNN head goes on its fine-tuned encoder's
(cached) features and must beat the fine-tuned head in the gate, as any candidate must; with
``classify.head: finetuned`` forced, a re-fit does nothing and says so.

The seconds from the first :meth:`request` of a batch to the promotion are recorded with each result.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xtalwatch.config import Settings
from xtalwatch.learn.bundle import HeadOnlyBundle, ModelBundle, load_head, read_meta
from xtalwatch.learn.feature_cache import FeatureCache
from xtalwatch.learn.features import CropUnreadable, read_crop
from xtalwatch.learn.gate import gate, holdout_mask, measure
from xtalwatch.learn.heads.calibrate import fit_temperature
from xtalwatch.learn.heads.serving import choose_feature_head
from xtalwatch.learn.registry import ModelRegistry, new_version
from xtalwatch.store.catalogue import Catalogue
from xtalwatch.store.labels import crop_paths_of, latest_labels, sha256_of

__all__ = ["HeadRefitter", "RefitResult"]

log = logging.getLogger(__name__)

SPREAD_SAMPLE = 1000  # labelled images the feature spread is measured on, as retraining's FEATURE_SAMPLE


@dataclass
class RefitResult:
    """What one re-fit did. ``promoted`` False with a ``version``: kept as rejected; without: nothing to fit."""

    version: str | None
    promoted: bool
    reason: str
    parent: str | None = None  # the model serving when the re-fit started
    n_labels: int = 0
    accuracy: float | None = None  # the candidate's hold-out accuracy
    serving_accuracy: float | None = None  # the parent's, on the same hold-out
    seconds: float = 0.0  # first request() of the batch (or the refit_now call) to promotion
    steps: dict[str, float] = field(default_factory=dict)  # seconds per step: features, fit, gate, save
    finished_at: float = 0.0  # Unix s

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class HeadRefitter:
    """Re-fits the serving head after labels, on a worker thread (or at once with :meth:`refit_now`)."""

    def __init__(self, settings: Settings, catalogue: Catalogue, cache: FeatureCache, *,
                 on_new_model: Callable[[str], None] | None = None):
        self.settings, self.catalogue, self.cache = settings, catalogue, cache
        self.on_new_model = on_new_model
        self.registry = ModelRegistry(settings.state.dir, catalogue)
        self.debounce = float(settings.web.refit_debounce_seconds)
        self._lock = threading.Lock()  # guards the request fields below
        self._refit_lock = threading.Lock()  # one re-fit at a time (worker or refit_now)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._first_request: float | None = None  # monotonic time of the batch's first request()
        self._last_request = 0.0
        self._thread: threading.Thread | None = None
        self._running = False
        self.last: RefitResult | None = None
        self.refits = 0

    # -- the life cycle ----------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="refit", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def request(self) -> None:
        """A label changed: re-fit once no further label has come for ``web.refit_debounce_seconds``."""
        now = time.monotonic()
        with self._lock:
            if self._first_request is None:
                self._first_request = now
            self._last_request = now
        self._wake.set()

    def status(self) -> dict[str, Any]:
        """JSON-able: the last re-fit's result, whether one is waiting or running, how many ran."""
        last = self.last
        with self._lock:
            pending = self._first_request is not None
        return {"version": last.version if last else None, "promoted": last.promoted if last else None,
                "reason": last.reason if last else "", "seconds": last.seconds if last else None,
                "n_labels": last.n_labels if last else 0, "accuracy": last.accuracy if last else None,
                "finished_at": last.finished_at if last else None, "pending": pending, "running": self._running,
                "refits": self.refits}

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            first: float | None = None
            while not self._stop.is_set():  # debounce: wait for the burst of labels to end
                with self._lock:
                    first, quiet = self._first_request, time.monotonic() - self._last_request
                if first is None or quiet >= self.debounce:
                    break
                self._stop.wait(self.debounce - quiet)
            if first is None or self._stop.is_set():
                continue
            with self._lock:
                self._first_request = None
            try:
                self.refit_now(requested_at=first)
            except Exception:  # a re-fit that breaks leaves the serving model as it is; the next label retries
                log.exception("refit: failed")

    # -- one re-fit --------------------------------------------------------------------------
    def refit_now(self, *, requested_at: float | None = None) -> RefitResult:
        """Re-fit, gate, store and (if it passes) promote a head now; ``requested_at``: monotonic start of the wait."""
        started = time.monotonic() if requested_at is None else requested_at
        with self._refit_lock:
            self._running = True
            try:
                result = self._refit(started)
            finally:
                self._running = False
        result.finished_at = time.time()
        self.last = result
        self.refits += 1
        log.info("refit: %s %s in %.2f s (%d labels): %s", "promoted" if result.promoted else "kept",
                 result.version or "nothing", result.seconds, result.n_labels, result.reason)
        if result.promoted and result.version is not None and self.on_new_model is not None:
            self.on_new_model(result.version)
        return result

    def _refit(self, started: float) -> RefitResult:
        ccfg, rcfg = self.settings.classify, self.settings.retrain
        steps: dict[str, float] = {}
        tick = time.monotonic()

        # -- the serving model ------------------------------------------------------------------
        serving = self.registry.current()
        if serving is None:
            return RefitResult(None, False, "no model is serving yet; train one first (xtalwatch train --now)")
        meta = read_meta(serving.path)
        encoder = meta["encoder_version"]

        # -- labelled images and their features ---------------------------------------------------
        folded = {i: ccfg.class_of(lab) for i, lab in latest_labels(self.catalogue).items()}
        labels = {i: c for i, c in folded.items() if c is not None}
        ids = sorted(labels)
        features = self._features(serving.path, encoder, ids)
        ids = [i for i in ids if i in features]
        names = [labels[i] for i in ids]
        result = RefitResult(None, False, "", parent=serving.version, n_labels=len(ids), steps=steps)
        classes = [c for c in ccfg.classes if c in set(names)]
        if len(classes) < 2:
            result.reason = f"labels of {len(classes)} class(es) ({', '.join(classes) or 'none'}); a head needs two"
            return result
        if ccfg.head == "finetuned":
            result.reason = ("classify.head is finetuned: a fine-tune needs the crops and minutes of CPU, so "
                             "retraining makes it (xtalwatch train --now); the labels wait for it")
            return result
        x = np.stack([features[i] for i in ids])
        y = np.array([classes.index(c) for c in names])
        shas = sha256_of(self.catalogue, ids)
        mask = holdout_mask([shas[i] for i in ids], names, rcfg.holdout_fraction)
        steps["features"] = time.monotonic() - tick

        # -- the candidate head, its temperature, and the gate ---------------------------------------
        tick = time.monotonic()
        temperature = 1.0
        candidate, selection = choose_feature_head(x[~mask], y[~mask], len(classes), ccfg,
                                                   holdout_fraction=rcfg.holdout_fraction)
        if mask.any():
            temperature = fit_temperature(candidate.logits(x[mask]), y[mask])
        steps["fit"] = time.monotonic() - tick
        tick = time.monotonic()
        # The spread (the collapse check) is the shared encoder's, the same for both: a sample measures it.
        sample = x[np.unique(np.linspace(0, len(x) - 1, min(SPREAD_SAMPLE, len(x))).astype(int))]
        cand = measure(sample, x, names, mask, cfg=ccfg, head=candidate, classes=classes)
        serving_head = load_head(serving.path)
        serv = measure(sample, x, names, mask, cfg=ccfg, head=serving_head,
                       classes=meta["classes"] if serving_head else ())
        decision = gate(cand, serv, rcfg)
        result.accuracy, result.serving_accuracy = cand.accuracy, serv.accuracy
        steps["gate"] = time.monotonic() - tick

        # -- register the gated head: promoted, or kept as rejected with the gate's reason ------------
        head = candidate
        tick = time.monotonic()
        version = new_version()
        refit_info = {"n_labels": len(ids), "seconds": None, "trigger": "labels", "parent": serving.version,
                      "encoder_version": encoder}
        bundle = HeadOnlyBundle(serving.path, version=version, head=head, classes=classes, temperature=temperature,
                                data_fingerprint=_labels_fingerprint(meta.get("data_fingerprint", ""), ids, names),
                                metrics={"n_labels": len(ids), "label_counts": {c: names.count(c) for c in classes},
                                         f"holdout_accuracy_{head.kind}": cand.accuracy,
                                         "holdout_size": int(mask.sum()),
                                         "head_selection": selection.to_dict()})
        metrics = {"gate": cand.to_dict(), "serving_gate": serv.to_dict(), "n_images": self.cache.count(encoder),
                   "n_labels": len(ids), "refit": refit_info, "head_selection": selection.to_dict()}
        self.registry.add(bundle, version=version, data_fingerprint=bundle.data_fingerprint, metrics=metrics,
                          config={"classify": ccfg.model_dump(mode="json"), "retrain": rcfg.model_dump(mode="json")},
                          status="candidate" if decision.promote else "rejected", reason=decision.reason)
        if decision.promote:
            self.registry.promote(version, f"re-fitted on {len(ids)} labels: {decision.reason}")
        steps["save"] = time.monotonic() - tick
        result.seconds = time.monotonic() - started
        refit_info["seconds"] = round(result.seconds, 3)
        self.registry.update_metrics(version, {"refit": refit_info})
        self.registry.prune(rcfg.keep_models)
        result.version, result.promoted, result.reason = version, decision.promote, decision.reason
        return result

    def _features(self, folder: Path, encoder: str, ids: list[int]) -> dict[int, np.ndarray]:
        """Features of ``ids`` under the serving encoder: from the cache, the rest embedded now (and cached)."""
        held, rows = self.cache.get(encoder, ids)
        out = dict(zip(held, rows, strict=True))
        missing = [i for i in ids if i not in out]
        if not missing:
            return out
        paths = crop_paths_of(self.catalogue, missing)
        bundle = ModelBundle.load(folder)
        crops, found = [], []
        for image_id in missing:
            try:
                crops.append(read_crop(paths[image_id], bundle.channels))
                found.append(image_id)
            except (KeyError, CropUnreadable):
                log.warning("refit: image %d has no readable crop; its label is left out", image_id)
        if found:
            embedded = bundle.embed(np.stack(crops))
            self.cache.put(encoder, found, embedded)
            out.update(zip(found, embedded, strict=True))
        return out


def _labels_fingerprint(parent: str, ids: list[int], names: list[str]) -> str:
    """The parent's data fingerprint with the labels folded in: retraining sees that labels changed."""
    digest = hashlib.sha256(f"{parent}|".encode() + ",".join(f"{i}:{n}" for i, n in zip(ids, names,
                                                                                     strict=True)).encode())
    return f"refit-{digest.hexdigest()[:16]}"
