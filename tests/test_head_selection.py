"""Serve the best head: linear, kNN and a SimCLRv2 fine-tune compete on held-out labels; the winner serves, recorded.

Real tiny torch training throughout: 16 px crops, a ResNet-18 fine-tuned for a handful of steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from refit_helpers import served_state, true_class
from retrain_helpers import make_state, tiny_settings
from xtalwatch.config import ClassifyConfig
from xtalwatch.learn.bundle import ModelBundle, build_bundle
from xtalwatch.learn.feature_cache import FeatureCache
from xtalwatch.learn.features import embed, to_model_rgb
from xtalwatch.learn.gate import holdout_mask, measure_model
from xtalwatch.learn.heads import FinetunedHead, HeadSelection, choose, finetune, head_from_state
from xtalwatch.learn.heads.finetune import Classifier, predict_logits
from xtalwatch.learn.heads.finetuned import projection_layer
from xtalwatch.learn.heads.serving import choose_feature_head, fit_head
from xtalwatch.learn.refit import HeadRefitter
from xtalwatch.learn.registry import ModelRegistry
from xtalwatch.learn.retrain import run_retrain
from xtalwatch.learn.simclr.encoder import build_encoder
from xtalwatch.store.catalogue import Catalogue
from xtalwatch.store.labels import set_label

TINY_TUNE = {"finetune_min_labels": 20, "finetune_steps": 3, "knn_k": 5}


def _crops(n: int = 36, size: int = 16, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """BGR crops whose class is their brightness: any head on any encoder can tell them apart."""
    rng = np.random.default_rng(seed)
    names = ["clear", "precipitate", "needles"]
    labels = [names[i % 3] for i in range(n)]
    levels = {"clear": 30, "precipitate": 120, "needles": 220}
    crops = np.stack([np.clip(levels[lab] + rng.normal(0, 8, (size, size, 3)), 0, 255) for lab in labels])
    return crops.astype(np.uint8), labels


def _weights_differ(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return any(not torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


# -- the rule ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("accuracies", "allowed", "winner", "margin"), [
    ({"linear": 0.8, "knn": 0.9, "finetuned": 0.85}, ("linear", "knn", "finetuned"), "knn", 0.05),
    ({"linear": 0.9, "knn": 0.9, "finetuned": 0.9}, ("linear", "knn", "finetuned"), "linear", 0.0),  # tie: cheapest
    ({"linear": 0.7, "knn": 0.8, "finetuned": 0.8}, ("linear", "knn", "finetuned"), "knn", 0.0),
    ({"linear": 0.7, "knn": 0.6, "finetuned": 0.95}, ("linear", "knn", "finetuned"), "finetuned", 0.25),
    ({"linear": 0.9, "knn": 0.8}, ("knn",), "knn", -0.1),  # forced: the record shows what forcing costs
    ({"linear": 0.9}, ("linear",), "linear", None),
])
def test_the_best_wins_and_a_tie_goes_to_the_cheaper(accuracies: dict, allowed: tuple, winner: str,
                                                      margin: float | None) -> None:
    chosen = choose(accuracies, 20, {"x": "why"}, allowed=allowed)
    assert chosen.winner == winner and chosen.n_holdout == 20
    assert chosen.margin == (None if margin is None else pytest.approx(margin))
    record = chosen.to_dict()
    assert record["winner"] == winner and record["skipped"] == {"x": "why"} and json.dumps(record)
    assert HeadSelection.from_dict(record) == chosen


def test_choose_refuses_nothing_scored_or_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="none of"):
        choose({"linear": 0.5}, 10, allowed=("knn",))
    with pytest.raises(ValueError, match="unknown head kinds"):
        choose({"mlp": 0.5}, 10)


def test_feature_heads_compete_when_auto_and_a_forced_kind_is_kept() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 64))
    y = np.arange(60) % 3
    x = (centres[y] + rng.normal(0, 0.05, (60, 64))).astype(np.float32)
    head, chosen = choose_feature_head(x, y, 3, ClassifyConfig(knn_k=5))
    assert chosen.winner == "linear" and chosen.accuracies == {"linear": 1.0, "knn": 1.0} and head.kind == "linear"
    head, chosen = choose_feature_head(x, y, 3, ClassifyConfig(head="knn", knn_k=5))
    assert head.kind == "knn" and chosen.winner == "knn" and chosen.n_holdout == 12
    head, chosen = choose_feature_head(x[:6], y[:6], 3, ClassifyConfig(head="auto"))  # too few to hold out
    assert head.kind == "linear" and chosen.n_holdout == 0 and "knn" in chosen.skipped
    with pytest.raises(ValueError, match="finetuned"):
        choose_feature_head(x, y, 3, ClassifyConfig(head="finetuned"))
    assert fit_head(x, y, 3, ClassifyConfig(head="auto")).kind == "linear"  # nothing to choose on: the cheapest


# -- the fine-tuned head ----------------------------------------------------------------------------
def test_a_finetuned_head_on_its_encoders_features_is_the_classifier() -> None:
    torch.manual_seed(0)
    crops, _ = _crops(24)
    rgb = to_model_rgb(crops, 16)
    y = np.arange(24) % 3
    encoder = build_encoder(16, small_stem=False)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    proj = projection_layer()
    tuned, head = finetune(encoder, rgb, y, 3, ClassifyConfig(**TINY_TUNE), proj_layer=proj)
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())  # a copy was trained
    assert _weights_differ(tuned, encoder) and _weights_differ(head.proj, proj)
    logits = head.logits(embed(tuned, rgb))
    assert logits.shape == (24, 3)
    classifier = Classifier(tuned, 3, head.proj)
    classifier.fc = head.fc
    np.testing.assert_allclose(logits, predict_logits(classifier, rgb), atol=1e-4)  # served = what was trained
    restored = head_from_state(head.state())
    assert isinstance(restored, FinetunedHead)
    np.testing.assert_allclose(restored.logits(embed(tuned, rgb)), logits, atol=1e-6)
    assert restored.logits(np.zeros((0, 512), np.float32)).shape == (0, 3)


def test_a_forced_finetune_serves_its_encoder_and_round_trips(tmp_path: Path) -> None:
    torch.manual_seed(0)
    crops, labels = _crops()
    encoder = build_encoder(16, small_stem=False)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    bundle = build_bundle(encoder, crops, labels, ClassifyConfig(head="finetuned", **TINY_TUNE), "v1")
    assert bundle.head.kind == "finetuned" and bundle.encoder is not encoder
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())
    assert _weights_differ(bundle.encoder, encoder)
    chosen = bundle.metrics["head_selection"]
    assert chosen["winner"] == "finetuned" and set(chosen["accuracies"]) == {"linear", "knn", "finetuned"}
    assert chosen["n_holdout"] == bundle.metrics["holdout_size"] > 0
    p = bundle.predict_proba(crops)
    bundle.save(tmp_path / "v1")
    meta = json.loads((tmp_path / "v1" / "bundle.json").read_text())
    assert meta["head"] == "finetuned" and meta["metrics"]["head_selection"] == chosen
    loaded = ModelBundle.load(tmp_path / "v1")
    np.testing.assert_allclose(loaded.predict_proba(crops), p, atol=1e-5)
    # The gate scores the fine-tuned model with its own head on its own features.
    y = [ClassifyConfig().class_of(lab) for lab in labels]
    mask = holdout_mask([str(i) for i in range(len(y))], y, 0.25)
    m = measure_model(loaded, crops, crops, y, mask, ClassifyConfig())
    assert m.head == "finetuned" and m.accuracy is not None and m.n_holdout == mask.sum()


def test_auto_tries_a_finetune_only_with_enough_labels() -> None:
    crops, labels = _crops()
    torch.manual_seed(0)
    encoder = build_encoder(16, small_stem=False)
    few = build_bundle(encoder, crops, labels, ClassifyConfig(**{**TINY_TUNE, "finetune_min_labels": 100}), "v1")
    chosen = few.metrics["head_selection"]
    assert set(chosen["accuracies"]) == {"linear", "knn"} and "100" in chosen["skipped"]["finetuned"]
    assert chosen["winner"] in ("linear", "knn") and few.head.kind == chosen["winner"] and few.encoder is encoder
    many = build_bundle(encoder, crops, labels, ClassifyConfig(**TINY_TUNE), "v2")
    chosen = many.metrics["head_selection"]
    assert set(chosen["accuracies"]) == {"linear", "knn", "finetuned"} and chosen["skipped"] == {}
    best = max(chosen["accuracies"].values())
    assert chosen["accuracies"][chosen["winner"]] == best and many.head.kind == chosen["winner"]
    assert all(many.metrics[f"holdout_accuracy_{k}"] == a for k, a in chosen["accuracies"].items())
    assert (many.encoder is encoder) == (chosen["winner"] != "finetuned")


def test_too_few_labels_to_hold_out_serve_linear_and_say_why() -> None:
    crops, labels = _crops(6)
    bundle = build_bundle(build_encoder(16, small_stem=False), crops, labels, ClassifyConfig(**TINY_TUNE), "v1")
    chosen = bundle.metrics["head_selection"]
    assert bundle.head.kind == "linear" and chosen["winner"] == "linear" and chosen["n_holdout"] == 0
    assert "too few to hold any out" in chosen["skipped"]["finetuned"] and bundle.temperature == 1.0


# -- the promotion path: retraining and the head refitter -------------------------------------------
def test_retraining_records_the_choice_and_serves_the_winner(tmp_path: Path) -> None:
    state = tmp_path / "state"
    make_state(state, 45, labelled_per_class=10)
    settings = tiny_settings(state, **{f"classify.{k}": v for k, v in TINY_TUNE.items()})
    outcome = run_retrain(settings)
    assert outcome.status == "promoted", outcome.reason
    record = ModelRegistry(state).get(outcome.version)
    chosen = record.metrics["head_selection"]
    assert set(chosen["accuracies"]) == {"linear", "knn", "finetuned"} and chosen["n_holdout"] > 0
    bundle = ModelBundle.load(record.path)
    assert bundle.head.kind == chosen["winner"] == outcome.candidate["head"]  # the gate scored the winner
    assert bundle.metrics["head_selection"] == chosen


def test_refit_on_a_finetuned_model_competes_against_it(tmp_path: Path) -> None:
    forced = {"classify.head": "finetuned", **{f"classify.{k}": v for k, v in TINY_TUNE.items()}}
    settings, ids = served_state(tmp_path, head_labels={i: true_class(i) for i in range(1, 25)}, **forced)
    state = settings.state.dir
    registry = ModelRegistry(state)
    assert json.loads((registry.get("v1").path / "bundle.json").read_text())["head"] == "finetuned"
    cat = Catalogue(state)
    try:
        for i in ids["usable"][:30]:
            set_label(cat, i, true_class(i), "reviewer", 1.0)
        # Forced fine-tuning: a re-fit cannot make one, and says so.
        result = HeadRefitter(settings, cat, FeatureCache(state)).refit_now()
        assert result.version is None and "retraining makes it" in result.reason
        # auto: linear and kNN compete on the fine-tuned encoder's features; the gate compares with the fine-tune.
        auto = settings.model_copy(update={"classify": settings.classify.model_copy(update={"head": "auto"})})
        result = HeadRefitter(auto, cat, FeatureCache(state)).refit_now()
        assert result.version is not None and result.serving_accuracy is not None, result.reason
        record = registry.get(result.version)
        assert record.metrics["serving_gate"]["head"] == "finetuned"
        chosen = record.metrics["head_selection"]
        assert set(chosen["accuracies"]) == {"linear", "knn"}
        meta = json.loads((record.path / "bundle.json").read_text())
        assert meta["head"] == chosen["winner"] == record.metrics["gate"]["head"] and meta["encoder_version"] == "v1"
    finally:
        cat.close()
