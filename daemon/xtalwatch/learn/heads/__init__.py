"""Classifiers on top of the SimCLR encoder, and their calibration.

``linear`` (logistic regression on L2-normalised features), ``knn`` (cosine, weighted votes),
``finetune`` (SimCLRv2: fine-tune from the first projection layer, then optionally distil),
``finetuned`` (that fine-tuned model served: its encoder in the bundle, the rest as a head) and
``calibrate`` (temperature scaling on held-out labels). Each head turns (N, 512) features into
(N, K) logits; the bundle (``xtalwatch.learn.bundle``) divides them by the calibration temperature.
``select`` picks the kind that serves (``classify.head``: auto or forced); ``serving`` fits and
restores heads one way for the bundle, the gate and the refitter.
"""

from __future__ import annotations

from xtalwatch.learn.heads.calibrate import fit_temperature, nll, softmax
from xtalwatch.learn.heads.finetuned import FinetunedHead, finetune
from xtalwatch.learn.heads.knn import KnnHead, fit_knn
from xtalwatch.learn.heads.linear import LinearHead, fit_linear
from xtalwatch.learn.heads.select import HeadSelection, candidate_kinds, choose
from xtalwatch.learn.heads.serving import Head, fit_head, head_from_state

__all__ = ["fit_temperature", "nll", "softmax", "KnnHead", "fit_knn", "LinearHead", "fit_linear", "Head", "fit_head",
           "head_from_state", "FinetunedHead", "finetune", "HeadSelection", "candidate_kinds", "choose"]
