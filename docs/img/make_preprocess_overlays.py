"""Draw the overlay grid of every real frame: what the drop finder boxed (see docs/preprocessing.md).

Run: .venv/bin/python docs/img/make_preprocess_overlays.py /work/shared/real-images [OUT.png] [--each DIR]
``--each DIR`` also writes one large overlay per frame, for looking at each box closely.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from xtalwatch.config import PreprocessConfig
from xtalwatch.preprocess import preprocess_array
from xtalwatch.preprocess.decode import decode_bytes
from xtalwatch.preprocess.overlay import draw_overlay

OUT = Path(__file__).with_name("preprocess_overlays_after.png")
TILE_W, TILE_H, COLUMNS = 160, 140, 6  # px per tile: the grid is 960 px wide, like the "before" one
EXTENSIONS = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"}


def frames(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS)


def short_name(path: Path) -> str:
    """The file's stem; for a Rigaku name, only its row, column and drop fields (``01_03_02``)."""
    parts = path.stem.split("_")
    return "_".join(parts[-8:-5]) if len(parts) > 10 else path.stem


def tile(path: Path, overlay: np.ndarray) -> np.ndarray:
    """The overlay letterboxed into one tile, with the file's name under it."""
    h, w = overlay.shape[:2]
    scale = min(TILE_W / w, (TILE_H - 18) / h)
    small = cv2.resize(overlay, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    out = np.full((TILE_H, TILE_W, 3), 255, np.uint8)
    out[: small.shape[0], : small.shape[1]] = small
    cv2.putText(out, short_name(path), (2, TILE_H - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", type=Path)
    parser.add_argument("out", type=Path, nargs="?", default=OUT)
    parser.add_argument("--each", type=Path, help="also write one 800 px overlay per frame here")
    args = parser.parse_args()
    cfg = PreprocessConfig()
    tiles = []
    for path in frames(args.root):
        image, _ = decode_bytes(path.read_bytes(), max_pixels=50_000_000)
        done = preprocess_array(image, cfg)
        overlay = draw_overlay(image, done.location, done.flags)
        print(f"{path.relative_to(args.root)} method={done.location.method} drop={done.location.drop_box} "
              f"flags={','.join(done.flags) or '-'} {done.location.note}")
        if args.each:
            args.each.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(args.each / f"{path.stem}.png"), overlay)
        tiles.append(tile(path, overlay))
    while len(tiles) % COLUMNS:
        tiles.append(np.full((TILE_H, TILE_W, 3), 255, np.uint8))
    rows = [np.hstack(tiles[i : i + COLUMNS]) for i in range(0, len(tiles), COLUMNS)]
    grid = cv2.cvtColor(np.vstack(rows), cv2.COLOR_BGR2RGB)
    # 128 colours, like the "before" picture: a quarter of the bytes, and the boxes stay exact.
    Image.fromarray(grid).quantize(128, method=Image.Quantize.MEDIANCUT).save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
