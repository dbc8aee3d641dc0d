"""Symbolic links out of the watched folder, under the real `xtalwatch run` (which a lab runs as root).

A link to a file outside, to a folder outside, and to a password file (an ``/etc/shadow`` of our
own, with a canary for content) are each rejected as ``outside_watch_dir`` without being opened:
the outside image is not catalogued, the canary appears nowhere (log, catalogue, status, API).
A link loop is a ``symlink_loop``; a link inside that points inside is simply another path of
its image, and a folder link inside is not walked twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

from chaos_helpers import REPO, ServiceProcess, wait_until
from conftest import jpeg_bytes

CANARY = b"SECRET-CANARY-5d1e9b"  # first bytes of the secret: an error that quoted content would show it


def rejections(service: ServiceProcess) -> dict[str, tuple[str, str]]:
    return {os.path.basename(p): (reason, detail) for p, reason, detail in
            service.query("SELECT path, reason, detail FROM rejected")}


def test_links_out_of_the_tree_are_rejected_and_never_read(tmp_path: Path) -> None:
    watch, state, outside = tmp_path / "imager", tmp_path / "state", tmp_path / "outside"
    for folder in (watch, outside, outside / "folder"):
        folder.mkdir()
    elsewhere = jpeg_bytes(seed=70)  # a valid image outside: catalogued only if it were read
    (outside / "elsewhere_01A_1.jpg").write_bytes(elsewhere)
    (outside / "folder" / "deep_02A_1.jpg").write_bytes(jpeg_bytes(seed=71))
    secret = outside / "shadow"
    secret.write_bytes(CANARY + b":root:$6$hash:19000:0:99999:7:::\n")
    secret.chmod(0o600)

    inner = jpeg_bytes(seed=72)
    (watch / "plate").mkdir()
    (watch / "plate" / "inner_03A_1.jpg").write_bytes(inner)
    os.symlink(watch / "plate" / "inner_03A_1.jpg", watch / "alias_03A_1.jpg")  # inside -> inside: fine
    os.symlink(watch / "plate", watch / "plate-again")  # a folder link inside: not walked twice
    os.symlink(outside / "elsewhere_01A_1.jpg", watch / "away_01A_1.jpg")
    os.symlink(outside / "folder", watch / "outfolder")
    os.symlink(watch / "loop_b.jpg", watch / "loop_a.jpg")
    os.symlink(watch / "loop_a.jpg", watch / "loop_b.jpg")

    service = ServiceProcess(watch, state, tmp_path / "run.log")
    try:
        service.start().wait_ready()
        os.symlink(secret, watch / "shadow.jpg")  # arrives live
        os.symlink(outside / "folder", watch / "plate" / "late-folder")  # a folder link arriving live

        outside_links = {"away_01A_1.jpg", "outfolder", "shadow.jpg", "late-folder"}
        wait_until(lambda: outside_links | {"loop_a.jpg", "loop_b.jpg"} <= set(rejections(service)), 90,
                   "every link rejected")
        found = rejections(service)
        for name in outside_links:
            reason, detail = found[name]
            assert reason == "outside_watch_dir", (name, found[name])
            assert str(outside) in detail, detail  # names where it points, not what it holds
        assert found["loop_a.jpg"][0] == found["loop_b.jpg"][0] == "symlink_loop"
        wait_until(lambda: service.count("files") == 2, 60, "the inside alias recorded as another path")
        assert set(rejections(service)) == outside_links | {"loop_a.jpg", "loop_b.jpg"}

        shas = {sha for (sha,) in service.query("SELECT sha256 FROM images")}
        assert shas == {hashlib.sha256(inner).hexdigest()}, "something outside the tree was catalogued"
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{service.port}/metrics", timeout=10).read().decode()
        assert re.search(r'xtalwatch_images_rejected_total\{imager="[^"]+",reason="outside_watch_dir"\} 4\.0', metrics), metrics

        api = urllib.request.urlopen(f"http://127.0.0.1:{service.port}/api/status", timeout=10).read()
        status = subprocess.run([sys.executable, "-m", "xtalwatch", "status", "--state", str(state)],
                                capture_output=True, cwd=REPO, timeout=120, env={**os.environ, "XTALWATCH_CONFIG": ""})
        assert status.returncode == 0, status.stderr
        assert "outside_watch_dir" in status.stdout.decode() and "outside_watch_dir" in json.dumps(json.loads(api))

        assert service.stop() == 0
        stored = b"".join(p.read_bytes() for p in state.rglob("*") if p.is_file())
        canary_bits = (CANARY, CANARY[:8], repr(CANARY[:8]).encode(), b"root:$6$")
        for where, text in (("the log", service.output().encode()), ("the API", api), ("status", status.stdout),
                            ("the state folder", stored)):
            assert not any(bit in text for bit in canary_bits), f"the secret's content appears in {where}"
        service.assert_healthy_end(1)
    finally:
        service.cleanup()
