"""``xtalwatch status``: counts, the newest images and recent errors."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime

from xtalwatch.commands._common import add_config_args, settings_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("status", help="counts, newest images and recent errors",
                                   description="Read the catalogue of a running or stopped service and report.")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--imager", metavar="NAME",
                        help="count only this imager's plates and images (a site's site.imager names)")
    add_config_args(parser, watch=False)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xtalwatch.observe.status import collect_status

    settings = settings_from_args(args)
    try:
        status = collect_status(settings, imager=args.imager)
    except FileNotFoundError as exc:
        print(f"xtalwatch status: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(status, indent=2, default=str))
        return 0
    print(f"state: {status['state_dir']}")
    if status["imager"] is not None:
        print(f"imager: {status['imager']} (rejected files, events, hits and well outcomes are the whole site's)")
    print(f"images: {status['images_total']} in {len(status['plates'])} plates, {status['wells_total']} wells "
          f"({status['unassigned_total']} unassigned); files: {status['files_total']}")
    print(f"model: {status['model_status']}; predictions: {status['predictions_total']}; "
          f"crystal hits: {status['hits_total']}")
    if status["wells_by_outcome"]:
        print("wells by outcome: " + ", ".join(f"{k} {v}" for k, v in status["wells_by_outcome"].items()))
    print(f"rejected: {status['rejected_total']}"
          + "".join(f"\n  {reason}: {n}" for reason, n in status["rejected_by_reason"].items()))
    if status["images_by_status"]:
        print("by status: " + ", ".join(f"{k} {v}" for k, v in sorted(status["images_by_status"].items())))
    if status["flagged_by_flag"]:
        print("quality flags: " + ", ".join(f"{k} {v}" for k, v in sorted(status["flagged_by_flag"].items())))
    if status["failed_by_reason"]:
        print("could not preprocess: " + ", ".join(f"{k} {v}" for k, v in sorted(status["failed_by_reason"].items())))
    if status["newest_images"]:
        print("newest:")
        for img in status["newest_images"]:
            when = datetime.fromtimestamp(img["catalogued_at"]).strftime("%Y-%m-%d %H:%M:%S")
            print(f"  {when}  {img['plate']} {img['well'] or '-'} d{img['drop'] or '-'} "
                  f"i{img['inspection'] or '-'}  v{img['version']}  {img['path']}")
    if status["recent_events"]:
        print("recent events:")
        for event in status["recent_events"]:
            when = datetime.fromtimestamp(event["created_at"]).strftime("%Y-%m-%d %H:%M:%S")
            print(f"  {when}  {event['kind']}  {event['payload']}")
    if status["recent_errors"]:
        print("recent errors:")
        for err in status["recent_errors"]:
            print(f"  {err['path']}: {err['reason']}: {err['detail']}")
    if status["imagers"]:
        print("site:")
        for name, imager in status["imagers"].items():
            last = imager["last_image_at"]
            when = datetime.fromtimestamp(last).strftime("%Y-%m-%d %H:%M:%S") if last is not None else "-"
            alive = sum(agent["alive"] for agent in imager["agents"])
            print(f"  {name}: {imager['images']} images, last {when}; agents {alive}/{len(imager['agents'])} alive")
    return 0
