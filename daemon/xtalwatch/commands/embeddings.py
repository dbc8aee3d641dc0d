"""``xtalwatch embeddings --out FILE``: encoder features of the catalogue's crops (or a folder), and a 2-D map."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xtalwatch.commands._common import add_config_args, settings_from_args
from xtalwatch.learn.registry import current_path
from xtalwatch.store.paths import shown

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "embeddings", help="export encoder features (.npy + CSV index) and a 2-D map PNG",
        description="Embed every preprocessed crop in the catalogue (or every image under --images DIR, "
                    "preprocessed like the service does) with the current model, write FILE.npy and FILE.csv, "
                    "and a PCA or t-SNE map coloured by label (or by prediction where there is none).")
    add_config_args(p, watch=False)
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="output .npy (the .csv goes beside it)")
    p.add_argument("--images", type=Path, metavar="DIR", help="embed this folder instead of the catalogue; "
                                                               "a subfolder name is taken as the label")
    p.add_argument("--preprocess", choices=["drop", "none"], default="drop", help="for --images (default drop)")
    p.add_argument("--model", type=Path, metavar="DIR", help="model bundle (default: <state>/models/current)")
    p.add_argument("--map", type=Path, metavar="PNG", help="map picture (default: FILE with .png)")
    p.add_argument("--method", choices=["pca", "tsne"], default="pca", help="2-D projection (default pca)")
    p.add_argument("--colour", choices=["label", "prediction"], default="label",
                   help="colour points by label (default; unlabelled ones by prediction) or by prediction")
    p.set_defaults(func=run)


def _from_catalogue(settings) -> tuple[list, list[dict]]:
    from xtalwatch.learn.features import CropUnreadable, read_crop
    from xtalwatch.store.catalogue import Catalogue, cropped_images
    from xtalwatch.store.labels import latest_labels

    cat = Catalogue(settings.state.dir)
    try:
        rows = cropped_images(cat)
        labels = latest_labels(cat)
    finally:
        cat.close()
    crops, index = [], []
    for image_id, path, crop in rows:
        crop_path = Path(crop)
        if not crop_path.is_absolute():
            crop_path = settings.state.dir / crop_path
        try:
            crops.append(read_crop(str(crop_path), settings.preprocess.channels))
        except CropUnreadable:
            continue
        index.append({"image_id": image_id, "path": shown(path), "label": labels.get(image_id, "")})
    return crops, index


def _from_folder(root: Path, settings, size: int, preprocess: bool) -> tuple[list, list[dict]]:
    import cv2

    from xtalwatch.learn.simclr.data import list_images, prepare_crop

    crops, index = [], []
    cfg = settings.preprocess if preprocess else None
    for f in list_images(root):
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if img is None:
            continue
        try:
            rgb = prepare_crop(img, size, cfg)
        except ValueError:
            continue
        rel = f.relative_to(root)
        crops.append(rgb[..., ::-1])  # the bundle takes the service's BGR layout
        index.append({"image_id": "", "path": shown(str(f)), "label": rel.parts[0] if len(rel.parts) > 1 else ""})
    return crops, index


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    import numpy as np

    from xtalwatch.learn.bundle import ModelBundle, calls
    from xtalwatch.learn.features import to_model_rgb
    from xtalwatch.tools.embeddings import project_2d, save_map, write_embeddings

    model_dir = args.model or current_path(settings.state.dir)
    if not (model_dir / "bundle.json").is_file():
        print(f"xtalwatch embeddings: no model yet at {model_dir} (name a bundle with --model DIR)", file=sys.stderr)
        return 1
    bundle = ModelBundle.load(model_dir)
    crops, index = (_from_folder(args.images, settings, bundle.image_size, args.preprocess == "drop")
                    if args.images else _from_catalogue(settings))
    if not crops:
        print("xtalwatch embeddings: no crops to embed", file=sys.stderr)
        return 1
    # crops of mixed sizes or channels → one (N, S, S, 3) BGR array at the bundle's size
    crops = np.stack([to_model_rgb(c[None], bundle.image_size)[0][..., ::-1] for c in crops])
    feats = bundle.embed(crops)
    if bundle.head is not None:
        for rec, call in zip(index, calls(bundle, bundle.predict_proba(crops), settings.classify.uncertain_below),
                             strict=True):
            rec["prediction"], rec["confidence"] = call["class"], call["confidence"]
    npy, csv_path = write_embeddings(feats, index, args.out)
    colour = [r.get("prediction", "") if args.colour == "prediction" else (r["label"] or r.get("prediction", ""))
              for r in index]
    png = save_map(project_2d(feats, args.method), colour, args.map or npy.with_suffix(".png"),
                   f"{len(feats)} crops, model {bundle.version}, {args.method}, coloured by {args.colour}")
    print(f"embeddings: {npy} ({feats.shape[0]} x {feats.shape[1]})\nindex: {csv_path}\nmap: {png}")
    return 0
