"""Each kind of bad input is recorded with a clear reason, counted, retried when it changes,
and never stops the service or touches the imager's files."""

from __future__ import annotations

import os
import shutil
import struct
import zlib
from pathlib import Path

import pytest
from conftest import jpeg_bytes, make_settings, tree_snapshot, wait_for


def png_header_bomb(width: int, height: int) -> bytes:
    """A tiny, valid PNG that declares an enormous frame: a decompression bomb."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def rejected(running, path: Path) -> tuple[str, str] | None:
    rows = running.service.catalogue.query("SELECT reason, detail FROM rejected WHERE path=?", (str(path),))
    return (rows[0]["reason"], rows[0]["detail"]) if rows else None


def test_every_kind_of_bad_input(folders: tuple[Path, Path], start_service) -> None:
    watch, state = folders
    good = jpeg_bytes(64, 48, seed=3)
    bad: dict[str, tuple[Path, str, str]] = {}

    def add(name: str, reason: str, needle: str, data: bytes | None = None) -> Path:
        path = watch / name
        if data is not None:
            path.write_bytes(data)
        bad[name] = (path, reason, needle)
        return path

    add("zero.jpg", "empty_file", "zero bytes", b"")
    add("truncated.jpg", "truncated", "cut short", good[: len(good) // 2])
    add("notes.jpg", "not_an_image", "no JPEG", b"Plate 90j8 notes\n" * 20)
    add("mislabelled.png", "wrong_extension", "extension says PNG but the content is JPEG", good)
    add("readme.txt", "unsupported_extension", "not one of watch.extensions", b"hello")
    add("bomb.png", "too_many_pixels", "not decoded", png_header_bomb(100_000, 100_000))
    secret = add("secret.jpg", "unreadable", "no permission", good[:-1] + b"\xd9")
    loop_a, loop_b = watch / "loop_a.jpg", watch / "loop_b.jpg"
    os.symlink(loop_b, loop_a)
    os.symlink(loop_a, loop_b)
    bad["loop_a.jpg"] = (loop_a, "symlink_loop", "loops back")
    bad["loop_b.jpg"] = (loop_b, "symlink_loop", "loops back")
    (watch / "subdir").mkdir()
    os.symlink(watch, watch / "subdir" / "back-to-top")  # a folder loop: must not recurse forever
    (watch / "ok_01A_1.jpg").write_bytes(jpeg_bytes(seed=4))

    as_root = os.geteuid() == 0
    os.chmod(secret, 0)
    if as_root:
        # root reads anything; the unreadable case is proved below with the capability dropped.
        del bad["secret.jpg"]
    before = tree_snapshot(watch)

    running = start_service(make_settings(watch, state))
    wait_for(lambda: running.count("images") >= 1 and all(rejected(running, p) for p, _, _ in bad.values()))
    for name, (path, reason, needle) in bad.items():
        found = rejected(running, path)
        assert found is not None, f"{name} was not recorded as rejected"
        assert found[0] == reason, f"{name}: {found}"
        assert needle in found[1], f"{name}: {found[1]!r} does not say {needle!r}"
        assert running.metric("xtalwatch_images_rejected_total", reason=reason) >= 1
    assert running.count("images") == 1 + (1 if as_root else 0)  # root can read secret.jpg: a real image
    assert running.service.watcher.healthy(), "the service stopped watching"

    # Fixed files are retried: complete the truncated JPEG, make the mislabelled one right.
    (watch / "truncated.jpg").write_bytes(good)
    wait_for(lambda: rejected(running, watch / "truncated.jpg") is None)
    images_now = running.count("images")
    (watch / "fine_02A_1.jpg").write_bytes(jpeg_bytes(seed=5))
    wait_for(lambda: running.count("images") == images_now + 1)

    # Bad files are not re-counted while unchanged.
    count = running.metric("xtalwatch_images_rejected_total", reason="empty_file")
    running.service.rescan()
    wait_for(lambda: len(running.service.tracker) == 0)
    assert running.metric("xtalwatch_images_rejected_total", reason="empty_file") == count

    os.chmod(secret, 0o644)
    after = {k: v for k, v in tree_snapshot(watch).items() if not k.endswith(("truncated.jpg", "fine_02A_1.jpg"))}
    before.pop(str(watch / "truncated.jpg"))
    before[str(secret)] = after[str(secret)]  # only our own chmod changed it
    assert after == before, "the imager's folder was modified"


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to drop the capability that lets root read any file")
def test_unreadable_file_is_recorded_and_retried_after_chmod(folders: tuple[Path, Path]) -> None:
    """`xtalwatch ingest` without CAP_DAC_OVERRIDE, on a file nobody may read; then the lab fixes it."""
    import subprocess
    import sys

    watch, state = folders
    secret = watch / "secret_01A_1.jpg"
    secret.write_bytes(jpeg_bytes(seed=7))
    os.chmod(secret, 0)
    caps = "-dac_override,-dac_read_search"
    cmd = ["setpriv", "--bounding-set", caps, "--inh-caps", caps,
           sys.executable, "-m", "xtalwatch", "ingest", str(watch), "--state", str(state)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "1 rejected" in proc.stdout and "no permission to read it" in proc.stderr
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert "1 unchanged" in proc.stdout, "an unchanged unreadable file was retried"
    os.chmod(secret, 0o644)  # the lab fixes the permission: ctime changes, so it is retried
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert "1 new" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize("mode", ["native", "poll"])
def test_links_out_of_the_watched_folder_are_rejected_unread(tmp_path: Path, start_service, monkeypatch, mode) -> None:
    """Links to a file, a folder and a password-like file outside: ``outside_watch_dir``, never opened,
    never quoted; a link inside that points inside is an ordinary duplicate."""
    import xtalwatch.stages.ingest as ingest

    watch, state, outside = tmp_path / "imager", tmp_path / "state", tmp_path / "outside"
    watch.mkdir()
    outside.mkdir()
    (outside / "elsewhere_01A_1.jpg").write_bytes(jpeg_bytes(seed=40))
    (outside / "shadow").write_bytes(b"root:$6$SECRET-HASH-NEVER-SHOWN:19000:0:99999:7:::\n")
    read: list[str] = []
    real_read = ingest.read_candidate
    monkeypatch.setattr(ingest, "read_candidate", lambda path, st: read.append(str(path)) or real_read(path, st))
    (watch / "inner_01A_1.jpg").write_bytes(jpeg_bytes(seed=41))
    os.symlink(watch / "inner_01A_1.jpg", watch / "alias_01A_1.jpg")  # inside to inside: fine
    os.symlink(outside / "elsewhere_01A_1.jpg", watch / "away_01A_1.jpg")
    os.symlink(outside, watch / "outfolder")
    running = start_service(make_settings(watch, state, **{"watch.mode": mode}))
    os.symlink(outside / "shadow", watch / "shadow.jpg")  # arrives live
    links = [watch / "away_01A_1.jpg", watch / "outfolder", watch / "shadow.jpg"]
    wait_for(lambda: all(rejected(running, p) for p in links) and running.count("files") == 2, timeout=30)
    for link in links:
        reason, detail = rejected(running, link)  # type: ignore[misc]
        assert reason == "outside_watch_dir" and str(outside) in detail and "SECRET" not in detail, (link, detail)
    assert running.metric("xtalwatch_images_rejected_total", reason="outside_watch_dir") == 3
    assert running.count("images") == 1 and running.count("files") == 2  # inner and its alias
    assert not any(str(outside) in p for p in read) and not any("outfolder" in p for p in read), read
    running.service.rescan()  # settled: not taken again
    wait_for(lambda: len(running.service.tracker) == 0 and running.service.ingest.idle())
    assert running.metric("xtalwatch_images_rejected_total", reason="outside_watch_dir") == 3


def test_names_that_are_not_utf8_are_catalogued(folders: tuple[Path, Path], start_service) -> None:
    """Latin-1 ``é`` (0xE9) and a stray 0xFF, at start-up and arriving live: catalogued, and shown escaped."""
    from xtalwatch.observe.status import collect_status

    watch, state = folders
    root = os.fsencode(watch)
    at_start = [b"caf\xe9_01A_1.jpg", b"\xff\xfe_02A_1.jpg"]
    for i, name in enumerate(at_start):
        Path(os.fsdecode(root + b"/" + name)).write_bytes(jpeg_bytes(seed=50 + i))
    os.mkdir(root + b"/plate_\xe9")
    Path(os.fsdecode(root + b"/plate_\xe9/bad\xff.jpg")).write_bytes(b"")
    running = start_service(make_settings(watch, state))
    Path(os.fsdecode(root + b"/live\xe9\x80_03A_1.jpg")).write_bytes(jpeg_bytes(seed=53))
    wait_for(lambda: running.count("images") == 3 and running.count("rejected") == 1, timeout=30)
    status = collect_status(running.service.settings)
    shown = {i["path"] for i in status["newest_images"]}
    assert shown == {f"{watch}/caf\\xe9_01A_1.jpg", f"{watch}/\\xff\\xfe_02A_1.jpg", f"{watch}/live\\xe9\\x80_03A_1.jpg"}
    assert status["recent_errors"][0]["path"] == f"{watch}/plate_\\xe9/bad\\xff.jpg"
    running.service.rescan()
    wait_for(lambda: len(running.service.tracker) == 0 and running.service.ingest.idle())
    assert running.count("images") == 3 and running.count("files") == 3
