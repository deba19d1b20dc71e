"""`lunarseg segment`: outputs, bad frames keep the stream going, exit codes, stdin, atomic writes."""
import json
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime_models import models as build_models
from lunarseg.cli import main
from lunarseg.runtime import atomic

LUNARSEG = str(Path(sys.executable).with_name("lunarseg"))


@pytest.fixture(scope="session")
def models():
    return build_models()


def _png(path, h=40, w=60, c=3, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((h, w, c) if c else (h, w)) * 255).astype(np.uint8)).save(path)
    return path


def _huge_header_png(path, w=100_000, h=100_000):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10))
                     + chunk(b"IEND", b""))
    return path


def _records(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def _no_temp_files(d):
    return [p.name for p in Path(d).rglob("*.tmp")] == []


def test_good_frames_give_masks_overlays_and_jsonl_and_exit_0(tmp_path, models, capsys):
    frames = tmp_path / "in"
    frames.mkdir()
    _png(frames / "b.png", seed=1)
    _png(frames / "a.png", c=None, seed=2)
    (frames / "notes.txt").write_text("skipped: not an image suffix")
    out = tmp_path / "out"
    code = main(["segment", models["bin.onnx"], str(frames), "--out", str(out), "--overlay", "--no-progress"])
    assert code == 0
    recs = _records(out / "results.jsonl")
    assert [Path(r["input"]).name for r in recs] == ["a.png", "b.png"]  # directory contents, sorted
    for r in recs:
        assert r["ok"] is True and r["error"] is None and r["latency_ms"] > 0
        assert {"rock_fraction", "rock_count", "largest_rock_px", "hazard"} <= set(r["stats"])
    mask = np.asarray(Image.open(out / "a_mask.png"))
    assert mask.shape == (40, 60) and set(np.unique(mask)) <= {0, 255}
    assert np.asarray(Image.open(out / "b_overlay.png")).shape == (40, 60, 3)
    assert _no_temp_files(out)
    assert "2 frame(s) segmented, 0 failed" in capsys.readouterr().err


def test_bad_frames_are_reported_and_the_stream_goes_on_with_exit_3(tmp_path, models, capsys):
    d = tmp_path / "in"
    d.mkdir()
    good1, good2 = _png(d / "good1.png", seed=3), _png(d / "good2.png", seed=4)
    corrupt = d / "corrupt.png"
    corrupt.write_bytes(good1.read_bytes()[:120])
    empty = d / "empty.png"
    empty.write_bytes(b"")
    text = d / "text.png"
    text.write_text("hello, I am not an image\n")
    huge = _huge_header_png(d / "huge.png")  # Pillow's decompression-bomb guard fires first
    big = _huge_header_png(d / "big.png", 7000, 7000)  # under Pillow's guard, over the 40 MP default
    order = [corrupt, good1, empty, text, huge, big, tmp_path / "missing.png", good2]
    out = tmp_path / "out"
    code = main(["segment", models["bin.tflite"], *map(str, order), "--out", str(out), "--no-progress"])
    assert code == 3
    recs = {Path(r["input"]).name: r for r in _records(out / "results.jsonl")}
    assert [Path(r["input"]).name for r in _records(out / "results.jsonl")] == [p.name for p in order]
    assert recs["good1.png"]["ok"] and recs["good2.png"]["ok"]
    assert (out / "good1_mask.png").exists() and (out / "good2_mask.png").exists()
    assert "truncated or corrupt image data" in recs["corrupt.png"]["error"]
    assert recs["empty.png"]["error"] == f"{empty}: file is empty (0 bytes)"
    assert recs["text.png"]["error"] == f"{text}: not a readable image (unknown or corrupt format)"
    # the wording belongs to runtime.imageio; the rule here: named file, size, the bomb guard
    for name in ("huge.png", "big.png"):
        msg = recs[name]["error"]
        assert msg.startswith(f"{d / name}: ") and "decompression bomb" in msg
    assert "7000x7000" in recs["big.png"]["error"] and "40,000,000" in recs["big.png"]["error"]
    assert recs["missing.png"]["error"].endswith("missing.png: no such file")
    err = capsys.readouterr().err.splitlines()
    frame_errors = [line for line in err if line.startswith("lunarseg segment: frame error: ")]
    assert len(frame_errors) == 6 and not any("Traceback" in line for line in err)
    assert not any((out / f"{n}_mask.png").exists() for n in ("corrupt", "empty", "text", "huge", "big"))


def test_max_pixels_refuses_larger_frames(tmp_path, models):
    f = _png(tmp_path / "f.png", h=40, w=60)
    out = tmp_path / "out"
    assert main(["segment", models["bin.onnx"], str(f), "--out", str(out), "--max-pixels", "1000",
                 "--no-progress"]) == 3
    (rec,) = _records(out / "results.jsonl")
    assert "60x40 = 2,400 pixels, over the limit of 1,000" in rec["error"]
    assert main(["segment", models["bin.onnx"], str(f), "--out", str(out), "--max-pixels", "2400",
                 "--no-progress"]) == 0


def test_globs_tile_jsonl_option_and_four_class_masks(tmp_path, models):
    for k in range(3):
        _png(tmp_path / f"f{k}.png", h=50, w=90, seed=k)
    out, log = tmp_path / "out", tmp_path / "log" / "run.jsonl"
    assert main(["segment", models["cls4.tflite"], str(tmp_path / "f*.png"), "--out", str(out), "--tile",
                 "--jsonl", str(log), "--no-progress"]) == 0
    recs = _records(log)
    assert len(recs) == 3 and all(r["ok"] for r in recs)
    mask = np.asarray(Image.open(out / "f0_mask.png"))
    assert mask.shape == (50, 90) and set(np.unique(mask)) <= {0, 85, 170, 255}
    assert main(["segment", models["cls4.tflite"], str(tmp_path / "zz*.png"), "--out", str(out),
                 "--no-progress"]) == 3
    assert "no files match this pattern" in _records(out / "results.jsonl")[-1]["error"]


def test_jsonl_is_appended_across_runs(tmp_path, models):
    f = _png(tmp_path / "f.png")
    for _ in range(2):
        assert main(["segment", models["bin.onnx"], str(f), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    assert len(_records(tmp_path / "o" / "results.jsonl")) == 2


def test_a_second_run_into_the_same_out_keeps_every_record_pointing_at_its_own_mask(tmp_path, models):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    first, second = _png(tmp_path / "a" / "x.png", seed=1), _png(tmp_path / "b" / "x.png", h=50, seed=2)
    out = tmp_path / "o"
    assert main(["segment", models["bin.onnx"], str(first), "--out", str(out), "--no-progress", "--overlay"]) == 0
    kept = (out / "x_mask.png").read_bytes()
    assert main(["segment", models["bin.onnx"], str(second), "--out", str(out), "--no-progress"]) == 0
    recs = _records(out / "results.jsonl")
    assert [Path(r["mask"]).name for r in recs] == ["x_mask.png", "x-2_mask.png"]
    assert (out / "x_mask.png").read_bytes() == kept  # the first run's mask is not overwritten
    assert Image.open(out / "x-2_mask.png").size == (60, 50)  # the second frame's own mask


def test_an_output_that_cannot_be_written_stops_with_exit_4_and_leaves_whole_frames_only(tmp_path, models,
                                                                                         monkeypatch, capsys):
    frames = [_png(tmp_path / f"f{i}.png", seed=i) for i in range(3)]
    out = tmp_path / "out"
    real_write = atomic.write_png

    def full_disk_on_the_second_overlay(path, array, **kw):
        if Path(path).name == "f1_overlay.png":
            raise OSError(28, "No space left on device")
        return real_write(path, array, **kw)

    monkeypatch.setattr(atomic, "write_png", full_disk_on_the_second_overlay)
    code = main(["segment", models["bin.onnx"], *map(str, frames), "--out", str(out), "--overlay", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 4
    assert err[-1] == (f"lunarseg segment: error: cannot write {out / 'f1_overlay.png'}: No space left on device; "
                       "the frames before it are complete")
    assert "1 frame(s) segmented, 0 failed" in err[-2]
    assert sorted(p.name for p in out.iterdir()) == ["f0_mask.png", "f0_overlay.png", "results.jsonl"]
    assert [Path(r["input"]).name for r in _records(out / "results.jsonl")] == ["f0.png"]


@pytest.mark.parametrize("argv,message", [
    (["MODEL_PB", "IMG", "--out", "OUT"], "unknown model file suffix '.pb'; valid: .onnx, .tflite"),
    (["NOMETA", "IMG", "--out", "OUT"], "carries no lunarseg metadata"),
    (["MODEL", "IMG", "--out", "OUT", "--threads", "0"], "--threads must be at least 1, got 0"),
    (["MODEL", "IMG", "--out", "OUT", "--max-pixels", "0"], "--max-pixels must be positive, got 0"),
    (["MODEL", "IMG", "--out", "IMG"], "exists and is not a directory"),
])
def test_bad_usage_or_model_exits_2_with_one_line(tmp_path, models, capsys, argv, message):
    pb = tmp_path / "m.pb"
    pb.write_bytes(b"x")
    img = _png(tmp_path / "f.png")
    subst = {"MODEL": models["bin.onnx"], "MODEL_PB": str(pb), "NOMETA": models["nometa.onnx"],
             "IMG": str(img), "OUT": str(tmp_path / "out")}
    code = main(["segment", *[subst.get(a, a) for a in argv], "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("lunarseg segment: error: ") and message in err[0]
    assert not (tmp_path / "out" / "f_mask.png").exists()


def test_a_record_cut_short_by_a_full_disk_is_undone_and_raised(tmp_path, monkeypatch):
    from lunarseg.runtime.segment_cli import JsonlWriter

    jsonl = JsonlWriter(tmp_path / "r.jsonl")
    jsonl.write({"input": "a.png", "ok": True})
    whole = (tmp_path / "r.jsonl").read_bytes()
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, data[: len(data) // 2]))
    with pytest.raises(OSError, match="No space left on device"):
        jsonl.write({"input": "b.png", "ok": True})
    jsonl.close()
    assert (tmp_path / "r.jsonl").read_bytes() == whole  # no half record left behind


def test_a_tflite_run_prints_only_its_own_lines_on_stderr(tmp_path, models):
    f = _png(tmp_path / "f.png")
    proc = subprocess.run([LUNARSEG, "segment", models["bin.tflite"], str(f), "--out", str(tmp_path / "o"),
                           "--no-progress"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert proc.stderr.splitlines() == [f"lunarseg segment: 1 frame(s) segmented, 0 failed; results in "
                                        f"{tmp_path / 'o' / 'results.jsonl'}"]  # no LiteRT INFO line


def test_help_documents_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["segment", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "0 all frames segmented; 3 some frames failed" in text and "2 bad usage" in text
    assert "4 an output could not be written" in text and "143 terminated (SIGTERM)" in text


def test_sigterm_stops_the_stream_like_ctrl_c_with_exit_143_and_whole_frames(tmp_path, models):
    a = _png(tmp_path / "a.png", seed=5)
    out = tmp_path / "out"
    proc = subprocess.Popen([LUNARSEG, "segment", models["bin.tflite"], "-", "--out", str(out), "--no-progress"],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        proc.stdin.write(f"{a}\n")
        proc.stdin.flush()
        deadline = time.time() + 30
        while not (out / "results.jsonl").exists() or not (out / "results.jsonl").read_text().strip():
            assert time.time() < deadline, "the first frame was not processed"
            time.sleep(0.05)
        proc.terminate()  # SIGTERM, as systemd and docker stop send it
        code = proc.wait(timeout=30)
        err = proc.stderr.read().strip().splitlines()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 143
    assert err[-1] == "lunarseg segment: terminated" and "1 frame(s) segmented, 0 failed" in err[-2]
    assert sorted(p.name for p in out.iterdir()) == ["a_mask.png", "results.jsonl"]
    assert [r["mask"] for r in _records(out / "results.jsonl")] == [str(out / "a_mask.png")]


def test_stdin_paths_are_processed_as_they_arrive(tmp_path, models):
    a, b = _png(tmp_path / "a.png", seed=5), _png(tmp_path / "b.png", seed=6)
    out = tmp_path / "out"
    proc = subprocess.Popen([LUNARSEG, "segment", models["bin.tflite"], "-", "--out", str(out)],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        proc.stdin.write(f"{a}\n")
        proc.stdin.flush()
        deadline = time.time() + 30
        while time.time() < deadline and not (out / "results.jsonl").exists() or \
                (out / "results.jsonl").exists() and not (out / "results.jsonl").read_text().strip():
            assert time.time() < deadline, "the first frame was not processed while stdin stayed open"
            time.sleep(0.05)
        assert (out / "a_mask.png").exists() and proc.poll() is None  # done before stdin closed
        proc.stdin.write(f"\n{tmp_path / 'nothere.png'}\n{b}\n")
        proc.stdin.close()
        err = proc.stderr.read()
        assert proc.wait(timeout=60) == 3
    finally:
        if proc.poll() is None:
            proc.kill()
    recs = _records(out / "results.jsonl")
    assert [r["ok"] for r in recs] == [True, False, True]
    assert (out / "b_mask.png").exists()
    assert "nothere.png: no such file" in err


def test_atomic_write_failure_mid_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "x" / "mask.png"
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_bytes(b"half a png")
            raise RuntimeError("disk went away")
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_ctrl_c_during_a_frame_leaves_no_partial_or_temp_file(tmp_path, models, monkeypatch, capsys):
    f1, f2 = _png(tmp_path / "f1.png", seed=7), _png(tmp_path / "f2.png", seed=8)
    out = tmp_path / "out"
    real_save = Image.Image.save
    calls = {"n": 0}

    def save_then_interrupt(self, fp, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:  # second mask: interrupt while the encoder is writing
            fp.write(b"\x89PNG partial")
            raise KeyboardInterrupt
        return real_save(self, fp, *a, **kw)

    monkeypatch.setattr(Image.Image, "save", save_then_interrupt)
    code = main(["segment", models["bin.onnx"], str(f1), str(f2), "--out", str(out), "--no-progress"])
    assert code == 130 and "interrupted" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["f1_mask.png", "results.jsonl"]
    assert len(_records(out / "results.jsonl")) == 1  # no half record
    Image.open(out / "f1_mask.png").load()  # the finished mask is whole


def test_ctrl_c_inside_the_atomic_rename_window_removes_the_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "m.png"

    def boom(*a):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic.write_png(target, np.zeros((4, 4), np.uint8))
    assert list(tmp_path.iterdir()) == []
