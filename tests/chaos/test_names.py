"""File names that are not UTF-8, as a Latin-1 share writes them, under the real `xtalwatch run`.

A name is bytes: ``café`` from a Latin-1 share is ``caf\\xe9``, and nothing stops ``\\xff``, a
newline or an escape character. Each must be catalogued exactly once, at start-up and arriving
live, survive a restart (the start-up scan meets them again), and be shown escaped (``\\xe9``)
in the log, ``xtalwatch status`` and ``/api/status``, never crash the service.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from chaos_helpers import REPO, ServiceProcess, wait_until
from conftest import jpeg_bytes

# name bytes -> how it is shown. Folders count: the plate folder is Latin-1 too.
AT_START = {
    b"caf\xe9_01A_1.jpg": "caf\\xe9_01A_1.jpg",
    b"\xff_02A_1.jpg": "\\xff_02A_1.jpg",
    b"plate_\xe9\xff/odd \x01\x7f%\\_03A_1.jpg": "plate_\\xe9\\xff/odd \\x01\\x7f%\\_03A_1.jpg",
}
LIVE = {
    b"new\nline\x1b[31m_04A_1.jpg": "new\\x0aline\\x1b[31m_04A_1.jpg",
    b"\x80\xc3(_05A_1.jpg": "\\x80\\xc3(_05A_1.jpg",
    b"plate_\xe9\xff/live\xfe_06A_1.jpg": "plate_\\xe9\\xff/live\\xfe_06A_1.jpg",
}
AFTER_RESTART = {b"again\xe9_07A_1.jpg": "again\\xe9_07A_1.jpg"}


def write(watch: Path, names: dict[bytes, str], seed: int) -> None:
    for i, name in enumerate(names):
        path = os.fsencode(watch) + b"/" + name
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + b".part", "wb") as handle:  # as an imager does: write, then rename into place
            handle.write(jpeg_bytes(seed=seed + i))
        os.rename(path + b".part", path)


def stored_names(service: ServiceProcess, watch: Path) -> list[bytes]:
    """Every path in ``files`` as bytes, relative to the watched folder (a BLOB is a name that is not UTF-8)."""
    root = os.fsencode(watch) + b"/"
    names = []
    for (path,) in service.query("SELECT path FROM files"):
        raw = path if isinstance(path, bytes) else path.encode("utf-8")
        assert raw.startswith(root), raw
        names.append(raw[len(root):])
    return names


def status_json(state: Path) -> dict:
    proc = subprocess.run([sys.executable, "-m", "xtalwatch", "status", "--state", str(state), "--json"],
                          capture_output=True, cwd=REPO, timeout=120, env={**os.environ, "XTALWATCH_CONFIG": ""})
    assert proc.returncode == 0, proc.stderr
    proc.stdout.decode("utf-8")  # strict: no surrogates, no raw bytes
    return json.loads(proc.stdout)


def test_names_that_are_not_utf8_are_catalogued_once_and_shown_escaped(tmp_path: Path) -> None:
    watch, state = tmp_path / "imager", tmp_path / "state"
    watch.mkdir()
    write(watch, AT_START, seed=100)
    service = ServiceProcess(watch, state, tmp_path / "run.log")
    try:
        service.start().wait_ready()
        write(watch, LIVE, seed=200)
        expected = {**AT_START, **LIVE}
        wait_until(lambda: service.count("images") == len(expected), 90, "every odd name catalogued")
        assert sorted(stored_names(service, watch)) == sorted(expected)  # losslessly, each once

        shown = {f"{watch}/{text}" for text in expected.values()}
        assert {i["path"] for i in status_json(state)["newest_images"]} == shown
        body = urllib.request.urlopen(f"http://127.0.0.1:{service.port}/api/status", timeout=10).read()
        assert {i["path"] for i in json.loads(body.decode("utf-8"))["newest_images"]} == shown
        log = service.output()
        for text in expected.values():
            assert text in log, f"{text} not shown escaped in the log"
        assert "\udcff" not in log and "\\udc" not in log

        assert service.stop() == 0
        again = ServiceProcess(watch, state, tmp_path / "run.log")
        service = again
        again.start().wait_ready()  # the start-up scan meets every odd name again: nothing new, no crash
        write(watch, AFTER_RESTART, seed=300)
        expected.update(AFTER_RESTART)
        wait_until(lambda: again.count("images") == len(expected), 90, "the name written after the restart")
        assert sorted(stored_names(again, watch)) == sorted(expected)
        assert again.count("rejected") == 0
        again.assert_healthy_end(len(expected))
    finally:
        service.cleanup()
