"""``xtalwatch evaluate``: the honest results table, from an ImageFolder of images.

``split`` (stratified train/test, labelled subsets) → ``pipeline`` (preprocess, SimCLR on the
train images without labels, every method at every label fraction) → ``report`` (confusion
matrices, HTML). No test image is seen by any training, self-supervised or not.
"""

from __future__ import annotations

from xtalwatch.learn.evaluate.pipeline import METHODS, EvalConfig, EvalResult, run_evaluation
from xtalwatch.learn.evaluate.split import labelled_subset, stratified_split

__all__ = ["METHODS", "EvalConfig", "EvalResult", "run_evaluation", "labelled_subset", "stratified_split"]
