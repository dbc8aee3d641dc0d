"""Draw docs/img/synth_vs_real.png, synth_classes.png and synth_timeline.png (see docs/synthetic.md).

Run: .venv/bin/python docs/img/make_synth_figures.py [/work/shared/real-images]
The real frames are only read and downscaled into the picture; they never enter the repository.
The synthetic tiles pin a few scene fields (rainbow, skin, UV...) so that each real frame has its
counterpart; everything else is drawn by the imager as usual, from fixed seeds.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import cv2
import numpy as np
from xtalwatch.tools.synth import CLASSES, plan_jobs, render_drop, render_job
from xtalwatch.tools.synth.render import render_frame
from xtalwatch.tools.synth.scene import STYLES, sample_scene

HERE = Path(__file__).parent
TILE_W, TILE_H, BAR = 224, 168, 14

# (real frame under the reference folder, caption) and its synthetic counterpart:
# (caption, style, class, scene fields to pin, seed): the seeds are ones whose content seed draws
# the habit named in the caption (strewn needles, a granular sheet).
PAIRS = [
    (("marco-gsk/crystals/gsk_10.jpeg", "real MARCO, crystals"),
     ("synthetic marco, strewn needles", "marco", "needles", {"rainbow": 0.0, "meniscus_dark": 0.6}, 4)),
    (("marco-gsk/precipitate/gsk_200.jpeg", "real MARCO, precipitate"),
     ("synthetic marco, granular sheet", "marco", "precipitate", {"rainbow": 0.0}, 2)),
    (("marco-gsk/other/gsk_1254.jpeg", "real MARCO, skin"),
     ("synthetic marco, clear + skin", "marco", "clear", {"skin": 0.3, "skin_brown": False, "rainbow": 0.0}, 5)),
    (("marco-gsk/other/gsk_1401.jpeg", "real MARCO, polariser"),
     ("synthetic marco, rainbow", "marco", "clear", {"rainbow": 0.3}, 6)),
    (("axis-embl/crystals/Crystals_UV.jpg", "real AXIS, UV"),
     ("synthetic UV, prisms", "minstrel", "prisms", {"uv": True}, 2)),
]


def _tile(img: np.ndarray, caption: str) -> np.ndarray:
    """The frame scaled to fill the tile (cropped to its aspect), with a caption bar on top."""
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    h, w = img.shape[:2]
    scale = max(TILE_W / w, (TILE_H - BAR) / h)
    small = cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    y, x = (small.shape[0] - (TILE_H - BAR)) // 2, (small.shape[1] - TILE_W) // 2
    out = np.zeros((TILE_H, TILE_W, 3), np.uint8)
    out[BAR:] = small[y:y + TILE_H - BAR, x:x + TILE_W]
    cv2.putText(out, caption, (3, BAR - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def synthetic(style: str, cls: str, pin: dict, seed: int, size: tuple[int, int] = (384, 288)) -> np.ndarray:
    scene = dataclasses.replace(sample_scene(np.random.default_rng(seed), *size, style, True), **pin)
    return render_frame(scene, cls, content_seed=seed, growth=1.0, frame_rng=np.random.default_rng(seed))


def vs_real(real_root: Path) -> np.ndarray:
    top = [_tile(cv2.imread(str(real_root / path)), caption) for (path, caption), _ in PAIRS]
    bottom = [_tile(synthetic(style, cls, pin, seed), caption) for _, (caption, style, cls, pin, seed) in PAIRS]
    return np.vstack([np.hstack(top), np.hstack(bottom)])


def classes() -> np.ndarray:
    """One frame per class (columns) and imager style (rows), 176 px tiles."""
    rows = []
    for s, style in enumerate(STYLES):
        tiles = []
        for c, cls in enumerate(CLASSES):
            img = render_drop(np.random.default_rng([s, c, 4]), cls, (256, 256), style=style, growth=1.0)
            small = cv2.resize(img, (176, 176 - BAR), interpolation=cv2.INTER_AREA)
            tile = np.zeros((176, 176, 3), np.uint8)
            tile[BAR:] = small
            cv2.putText(tile, f"{style}, {cls}", (3, BAR - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (255, 255, 255), 1,
                        cv2.LINE_AA)
            tiles.append(tile)
        rows.append(np.hstack(tiles))
    return np.vstack(rows)


def timeline(seed: int = 1, drops: int = 4, inspections: int = 6) -> np.ndarray:
    """The first ``drops`` drops of a plate whose content changes, over ``inspections`` inspections."""
    jobs = plan_jobs(plates=1, layout="export", wells=24, drops=1, inspections=inspections, size=(256, 256),
                     seed=seed, balance="even")
    by_well: dict[str, list] = {}
    for job in jobs:
        by_well.setdefault(job.row.well, []).append(job)
    changing = [frames for frames in by_well.values() if len({j.state for j in frames}) > 1][:drops]
    rows = []
    for frames in changing:
        tiles = []
        for job in frames:
            img = cv2.resize(render_job(job), (176, 176 - BAR), interpolation=cv2.INTER_AREA)
            tile = np.zeros((176, 176, 3), np.uint8)
            tile[BAR:] = img if img.ndim == 3 else img[..., None]
            cv2.putText(tile, f"{job.row.well} insp {job.row.inspection}: {job.row.label}", (3, BAR - 3),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.38, (255, 255, 255), 1, cv2.LINE_AA)
            tiles.append(tile)
        rows.append(np.hstack(tiles))
    return np.vstack(rows)


def main(real_root: Path) -> None:
    cv2.imwrite(str(HERE / "synth_vs_real.png"), vs_real(real_root))
    cv2.imwrite(str(HERE / "synth_classes.png"), classes())
    cv2.imwrite(str(HERE / "synth_timeline.png"), timeline())


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/work/shared/real-images"))
