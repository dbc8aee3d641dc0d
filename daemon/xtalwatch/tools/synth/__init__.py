"""The synthetic imager: realistic plates of crystallisation drops, needing no instrument.

It feeds the demo, the tests, the benchmarks and the synthetic row of the evaluation. Stages,
one module each: ``scene`` (well, drop, light, optics), ``crystals`` (one drawing per habit),
``timeline`` (how a drop evolves), ``render`` (one frame), ``layouts`` (instrument folders),
``writer`` (files and labels on disk), ``generate`` (a whole run, batch or paced).
"""

from xtalwatch.tools.synth.generate import Job, default_labels_path, generate_plates, plan_jobs, render_job
from xtalwatch.tools.synth.layouts import LAYOUTS, Plate, make_plates, relpath
from xtalwatch.tools.synth.render import render_drop, render_frame
from xtalwatch.tools.synth.timeline import (
    ALLOWED,
    CLASSES,
    MIXES,
    Frame,
    Mix,
    is_allowed,
    parse_balance,
    parse_mix,
    sample_timeline,
)
from xtalwatch.tools.synth.writer import LabelRow, read_labels

__all__ = [
    "ALLOWED",
    "CLASSES",
    "LAYOUTS",
    "MIXES",
    "Frame",
    "Job",
    "LabelRow",
    "Mix",
    "Plate",
    "default_labels_path",
    "generate_plates",
    "is_allowed",
    "make_plates",
    "parse_balance",
    "parse_mix",
    "plan_jobs",
    "read_labels",
    "relpath",
    "render_drop",
    "render_frame",
    "render_job",
    "sample_timeline",
]
