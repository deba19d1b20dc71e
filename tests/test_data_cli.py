"""`lunarseg data synth|check|preview`: exit codes, one-line errors naming the file, every problem listed."""
import numpy as np
import pytest
from PIL import Image

from data_fixtures import make_real_photos, make_tree, png16_gray, png_bytes, png_header_only, write_file
from lunarseg.cli import main


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(capsys, *argv) -> str:
    code, _, err = _run(capsys, *argv)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    assert main(["data", "synth", "--out", str(root), "--count", "4", "--size", "160x120", "--seed", "1"]) == 0
    return root


def test_synth_reports_frames_per_second(tmp_path, capsys):
    code, out, _ = _run(capsys, "data", "synth", "--out", str(tmp_path), "--count", "2", "--size", "96x64")
    assert code == 0 and "frames/s" in out and "wrote 2 frames (96x64)" in out
    assert Image.open(tmp_path / "images" / "render" / "render0002.png").size == (96, 64)


@pytest.mark.parametrize("size", ["72x", "abc", "720*480", "8x8"])
def test_synth_bad_size_is_a_one_line_error(tmp_path, capsys, size):
    assert "--size" in _one_line_error(capsys, "data", "synth", "--out", str(tmp_path), "--size", size)


@pytest.mark.parametrize("option", ["--count", "--workers"])
def test_synth_count_or_workers_below_one_is_an_error(tmp_path, capsys, option):
    line = _one_line_error(capsys, "data", "synth", "--out", str(tmp_path), option, "0")
    assert f"{option} must be at least 1, got 0" in line


def test_synth_refuses_to_write_over_another_dataset_or_other_files(synthetic_root, tmp_path, capsys):
    line = _one_line_error(capsys, "data", "synth", "--out", str(synthetic_root), "--count", "2", "--size", "96x64")
    assert "already exists and is not an empty folder" in line
    assert len(list((synthetic_root / "images" / "render").iterdir())) == 4  # untouched


@pytest.mark.parametrize("args, message", [(["--seed", "-1"], "--seed must be at least 0, got -1"),
                                           (["--size", "100000x100000"], "at most 40,000,000 pixels per frame")])
def test_synth_refuses_a_negative_seed_or_a_frame_too_big_to_draw(tmp_path, capsys, args, message):
    assert message in _one_line_error(capsys, "data", "synth", "--out", str(tmp_path / "d"), "--count", "1", *args)


def test_check_passes_a_synthetic_tree(synthetic_root, capsys):
    code, out, _ = _run(capsys, "data", "check", str(synthetic_root))
    assert code == 0 and "4 frame pairs" in out and "no problems" in out and "small_rock" in out


def test_check_names_the_one_broken_file_and_exits_1(synthetic_root, tmp_path, capsys):
    import shutil

    root = shutil.copytree(synthetic_root, tmp_path / "copy")
    broken = root / "images" / "clean" / "clean0003.png"
    broken.write_bytes(broken.read_bytes()[:60])
    code, out, _ = _run(capsys, "data", "check", str(root))
    problems = out.strip().splitlines()[:-1]
    assert code == 1 and len(problems) == 1
    assert str(broken) in problems[0] and "truncated or corrupt" in problems[0]
    assert "1 problem(s)" in out


def test_check_lists_every_problem_one_line_each(tmp_path, capsys):
    make_tree(tmp_path, numbers=range(1, 10))
    clean, render = tmp_path / "images" / "clean", tmp_path / "images" / "render"
    (clean / "clean0001.png").unlink()                                     # render without mask
    (render / "render0002.png").unlink()                                   # mask without render
    write_file(clean / "clean0003.png", b"")                                # 0 bytes
    write_file(clean / "clean0004.png", b"<html>not an image</html>")        # not an image
    write_file(render / "render0005.png", png_header_only(100_000, 100_000))  # bomb header
    write_file(clean / "clean0006.png", png_bytes(np.zeros((24, 32, 3), np.uint8)))  # other size
    write_file(render / "render0007.png", png16_gray(np.full((48, 64), 40000, np.uint16)))  # 16-bit: fine
    rgba = np.zeros((48, 64, 4), np.uint8)
    write_file(clean / "clean0008.png", png_bytes(rgba))                    # RGBA: fine
    write_file(render / "render0009.png", png_bytes(np.zeros((48, 64, 3), np.uint8), mode="P"))  # palette: fine
    code, out, _ = _run(capsys, "data", "check", str(tmp_path))
    lines = out.strip().splitlines()
    problems, summary = lines[:-1], lines[-1]
    expected = {
        "render0001.png": "render has no mask",
        "clean0002.png": "mask has no render",
        "clean0003.png": "file is empty (0 bytes)",
        "clean0004.png": "not a readable image",
        "render0005.png": "decompression bomb",
        "clean0006.png": "mask is 32x24 but its frame render0006.png is 64x48",
    }
    assert code == 1 and len(problems) == len(expected)
    for name, problem in expected.items():
        assert any(name in line and problem in line for line in problems), (name, problems)
    assert "6 problem(s)" in summary


def test_check_lists_unmatched_real_photos_and_a_bad_id_line_among_the_problems(tmp_path, capsys):
    make_tree(tmp_path, numbers=range(1, 6))
    make_real_photos(tmp_path, names=("PCAM1", "TCAM2", "LONE"))
    (tmp_path / "real_moon_images/g_LONE.png").unlink()  # a photo without its mask
    (tmp_path / "real_moon_images/g_GHOST.png").write_bytes((tmp_path / "real_moon_images/g_PCAM1.png").read_bytes())
    (tmp_path / "shadow_IDs.txt").write_text("3\nrender0004\n")
    code, out, _ = _run(capsys, "data", "check", str(tmp_path))
    problems = out.strip().splitlines()[:-1]
    assert code == 1 and len(problems) == 3, problems
    assert any("LONE.png: real photo has no mask g_LONE.png" in p for p in problems)
    assert any("g_GHOST.png: mask has no real photo GHOST.png" in p for p in problems)
    assert any("shadow_IDs.txt: line 2: 'render0004' is not a frame ID" in p for p in problems)


def test_check_missing_root_is_a_one_line_error(tmp_path, capsys):
    line = _one_line_error(capsys, "data", "check", str(tmp_path / "absent"))
    assert str(tmp_path / "absent") in line and "no such dataset directory" in line


def test_check_empty_root_is_a_one_line_error(tmp_path, capsys):
    assert "no frames found" in _one_line_error(capsys, "data", "check", str(tmp_path))


def test_preview_writes_a_grid_png(synthetic_root, tmp_path, capsys):
    out = tmp_path / "grid.png"
    code, _, _ = _run(capsys, "data", "preview", str(synthetic_root), "--out", str(out), "--count", "4")
    grid = np.asarray(Image.open(out))
    assert code == 0 and grid.shape[1] > 2 * 360 and grid.std() > 10


def test_preview_of_a_tree_with_a_corrupt_frame_names_it(tmp_path, capsys):
    make_tree(tmp_path, numbers=(1,))
    write_file(tmp_path / "images" / "render" / "render0001.png", b"\x89PNG\r\n\x1a\n garbage")
    line = _one_line_error(capsys, "data", "preview", str(tmp_path), "--out", str(tmp_path / "g.png"))
    assert "render0001.png" in line and "corrupt" in line


def test_one_size_parser_names_the_flag_and_takes_a_square_only_where_allowed():
    from lunarseg.data.cli import parse_size
    from lunarseg.runtime.errors import ConfigError

    assert parse_size("720x480") == (720, 480) and parse_size("128", min_side=1, square_ok=True) == (128, 128)
    with pytest.raises(ConfigError, match=r"^--size '128': expected WIDTHxHEIGHT, e.g. 720x480$"):
        parse_size("128")
    with pytest.raises(ConfigError, match=r"^--crop '0x4': width and height must be at least 1 pixel$"):
        parse_size("0x4", "--crop", min_side=1, square_ok=True)
