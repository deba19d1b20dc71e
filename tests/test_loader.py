"""The loader on tiny hand-made trees in the Kaggle layout: pairing, flagged IDs, real photos, splits, arrays."""
import numpy as np
import pytest

from data_fixtures import HEIGHT, WIDTH, frame_and_mask, make_real_photos, make_tree, png_bytes, write_file
from lunarseg.data.loader import DatasetIndex, load_arrays, load_pair
from lunarseg.data.splits import assign_splits
from lunarseg.runtime.errors import ConfigError, DatasetError, ImageError
from lunarseg.runtime.masks import LARGE_ROCK, SKY, SMALL_ROCK


def test_renders_pair_with_clean_masks_by_frame_number(tmp_path):
    index = DatasetIndex.scan(make_tree(tmp_path, numbers=(3, 1, 2)))
    assert [f.id for f in index.frames] == [1, 2, 3]
    assert all(f.mask_path.name == f"clean{f.id:04d}.png" for f in index.frames)


def test_ground_masks_are_used_when_clean_folder_is_absent(tmp_path):
    index = DatasetIndex.scan(make_tree(tmp_path, mask_kind="ground"))
    assert index.mask_kind == "ground" and index.frames[0].mask_path.name == "ground0001.png"


def test_mask_kind_ground_chooses_ground_even_when_clean_exists(tmp_path):
    make_tree(tmp_path, mask_kind="clean")
    make_tree(tmp_path, mask_kind="ground")
    assert DatasetIndex.scan(tmp_path, mask_kind="ground").frames[0].mask_path.parent.name == "ground"


def test_unknown_mask_kind_lists_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match="valid: clean, ground"):
        DatasetIndex.scan(make_tree(tmp_path), mask_kind="raw")


def test_dim_distant_rock_colours_still_count_as_rock(tmp_path):
    index = DatasetIndex.scan(make_tree(tmp_path))
    _, four = load_pair(index.frames[0], "4class")
    _, binary = load_pair(index.frames[0], "binary")
    assert four[HEIGHT // 2 + 1, 6] == SMALL_ROCK and four[HEIGHT - 10, WIDTH - 10] == LARGE_ROCK
    assert four[0, 0] == SKY
    assert binary[HEIGHT // 2 + 1, 6] == 1 and binary[0, 0] == 0 and set(np.unique(binary)) == {0, 1}


def test_flagged_id_lists_exclude_frames_with_blank_lines_and_commas(tmp_path):
    make_tree(tmp_path, numbers=(1, 2, 3, 4, 5))
    (tmp_path / "mismatch_IDs.txt").write_text(" 2\n\n  \n")
    (tmp_path / "shadow_IDs.txt").write_text("4, 5\n")
    assert [f.id for f in DatasetIndex.scan(tmp_path).frames] == [1, 3]
    assert len(DatasetIndex.scan(tmp_path, exclude_flagged=False).frames) == 5


def test_flagged_frames_without_masks_are_not_orphans(tmp_path):
    make_tree(tmp_path, numbers=(1, 2))
    (tmp_path / "images" / "clean" / "clean0002.png").unlink()
    (tmp_path / "cam_anomaly_IDs.txt").write_text("2\n")
    assert [f.id for f in DatasetIndex.scan(tmp_path).frames] == [1]


def test_id_list_with_text_is_an_error_naming_file_and_line(tmp_path):
    make_tree(tmp_path)
    (tmp_path / "ground_facing_IDs.txt").write_text("1\nframe7\n")
    with pytest.raises(DatasetError, match=r"ground_facing_IDs.txt: line 2: 'frame7' is not a frame ID"):
        DatasetIndex.scan(tmp_path)


def test_real_moon_photos_pair_with_g_masks(tmp_path):
    make_real_photos(make_tree(tmp_path), names=("PCAM1", "TCAM2"))
    real = DatasetIndex.scan(tmp_path).split("real")
    assert [(p.id, p.mask_path.name) for p in real] == [("PCAM1", "g_PCAM1.png"), ("TCAM2", "g_TCAM2.png")]
    _, classes = load_pair(real[0], "4class")
    assert classes[0, 0] == SKY


def test_missing_root_is_a_one_line_error(tmp_path):
    with pytest.raises(DatasetError, match=r"nowhere: no such dataset directory"):
        DatasetIndex.scan(tmp_path / "nowhere")


def test_empty_root_explains_the_expected_layout(tmp_path):
    with pytest.raises(DatasetError, match=r"no frames found; expected images/render/renderNNNN.png"):
        DatasetIndex.scan(tmp_path)


def test_render_without_mask_is_named(tmp_path):
    make_tree(tmp_path, numbers=(1, 2))
    (tmp_path / "images" / "clean" / "clean0002.png").unlink()
    with pytest.raises(DatasetError, match=r"render0002.png: render has no mask \(expected .*clean0002.png\)"):
        DatasetIndex.scan(tmp_path)


def test_mask_without_render_is_named(tmp_path):
    make_tree(tmp_path, numbers=(1, 2))
    (tmp_path / "images" / "render" / "render0001.png").unlink()
    with pytest.raises(DatasetError, match=r"clean0001.png: mask has no render"):
        DatasetIndex.scan(tmp_path)


def test_mask_of_another_size_is_named_with_both_sizes(tmp_path):
    make_tree(tmp_path, numbers=(1,))
    _, small = frame_and_mask(1, size=(32, 24))
    write_file(tmp_path / "images" / "clean" / "clean0001.png", png_bytes(small))
    with pytest.raises(ImageError, match=r"clean0001.png: mask is 32x24 but its frame render0001.png is 64x48"):
        load_pair(DatasetIndex.scan(tmp_path).frames[0])


def test_single_channel_mask_cannot_give_four_classes(tmp_path):
    make_tree(tmp_path, numbers=(1,))
    write_file(tmp_path / "images" / "clean" / "clean0001.png", png_bytes(np.zeros((HEIGHT, WIDTH), np.uint8)))
    pair = DatasetIndex.scan(tmp_path).frames[0]
    assert load_pair(pair, "binary")[1].max() == 0
    with pytest.raises(ImageError, match="clean0001.png: single-channel mask cannot give 4 classes"):
        load_pair(pair, "4class")


def test_splits_are_disjoint_cover_all_and_default_to_about_80_10_10(tmp_path):
    ids = list(range(1, 2001))
    chosen = assign_splits(ids)
    counts = {name: sum(1 for v in chosen.values() if v == name) for name in ("train", "val", "test")}
    assert sum(counts.values()) == 2000
    assert 1500 < counts["train"] < 1700 and 120 < counts["val"] < 280 and 120 < counts["test"] < 280


def test_same_id_lands_in_the_same_split_whatever_else_exists():
    big = assign_splits(list(range(1, 1001)))
    small = assign_splits(list(range(500, 601)))
    assert all(small[i] == big[i] for i in small)


@pytest.mark.parametrize("count", [3, 4, 5, 7])
def test_every_split_is_non_empty_from_three_frames(tmp_path, count):
    index = DatasetIndex.scan(make_tree(tmp_path, numbers=range(1, count + 1)))
    parts = [index.split(name) for name in ("train", "val", "test")]
    assert all(parts) and sorted(f.id for p in parts for f in p) == list(range(1, count + 1))


def test_load_arrays_resizes_frames_and_masks_for_the_trainer(tmp_path):
    index = DatasetIndex.scan(make_tree(tmp_path))
    x, y = load_arrays(index.frames, (24, 32), task="4class", colour_mode="gray")
    assert x.shape == (3, 24, 32, 1) and x.dtype == np.uint8
    assert y.shape == (3, 24, 32) and set(np.unique(y)) <= {0, 1, 2, 3} and (y == LARGE_ROCK).any()
    rgb, _ = load_arrays(index.frames[:1], (24, 32), colour_mode="rgb")
    assert rgb.shape == (1, 24, 32, 3)


def test_unknown_colour_mode_lists_valid_ones(tmp_path):
    index = DatasetIndex.scan(make_tree(tmp_path))
    with pytest.raises(ConfigError, match="valid: gray, rgb"):
        load_arrays(index.frames, (8, 8), colour_mode="bgr")


def test_data_layer_imports_no_tensorflow():
    import subprocess
    import sys

    code = ("import sys, lunarseg.data.loader, lunarseg.data.synth, lunarseg.data.check, lunarseg.data.preview;"
            "print([m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
