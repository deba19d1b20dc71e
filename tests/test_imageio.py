"""read_image: every kind of bad or unusual file gives uint8 pixels or a one-line ImageError naming the file."""
import numpy as np
import pytest

from data_fixtures import png16_gray, png_bytes, png_header_only, write_file
from lunarseg.runtime.errors import ImageError
from lunarseg.runtime.imageio import read_image


def _error(path) -> str:
    with pytest.raises(ImageError) as info:
        read_image(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def test_zero_byte_file_is_refused_as_empty(tmp_path):
    assert "empty (0 bytes)" in _error(write_file(tmp_path / "empty.png", b""))


def test_missing_file_is_named(tmp_path):
    assert "no such file" in _error(tmp_path / "absent.png")


def test_text_file_named_png_is_not_an_image(tmp_path):
    assert "not a readable image" in _error(write_file(tmp_path / "notes.png", b"just some text\n" * 10))


def test_truncated_png_is_refused(tmp_path):
    data = png_bytes(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    assert "truncated or corrupt" in _error(write_file(tmp_path / "cut.png", data[: len(data) // 2]))


def test_corrupt_png_data_is_refused(tmp_path):
    data = bytearray(png_bytes(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)))
    data[200:240] = b"\xff" * 40
    assert "corrupt" in _error(write_file(tmp_path / "bad.png", bytes(data)))


def test_decompression_bomb_header_is_refused_without_decoding(tmp_path):
    message = _error(write_file(tmp_path / "bomb.png", png_header_only(100_000, 100_000)))
    assert "100000x100000" in message and "decompression bomb" in message


def test_sixteen_bit_gray_is_scaled_to_eight_bit(tmp_path):
    path = write_file(tmp_path / "deep.png", png16_gray(np.array([[0, 65535], [32896, 257]], np.uint16)))
    assert read_image(path).tolist() == [[0, 255], [128, 1]]


def test_rgba_drops_alpha(tmp_path):
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 2], rgba[..., 3] = 255, 7
    out = read_image(write_file(tmp_path / "rgba.png", png_bytes(rgba)))
    assert out.shape == (4, 5, 3) and (out[..., 2] == 255).all()


def test_palette_is_expanded_to_rgb(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[1, 1] = (0, 0, 255)
    out = read_image(write_file(tmp_path / "pal.png", png_bytes(rgb, mode="P")))
    assert out.shape == (4, 5, 3) and tuple(out[1, 1]) == (0, 0, 255)


def test_single_channel_stays_two_dimensional(tmp_path):
    gray = np.arange(20, dtype=np.uint8).reshape(4, 5)
    assert np.array_equal(read_image(write_file(tmp_path / "gray.png", png_bytes(gray))), gray)


def test_nearest_resize_of_label_maps_is_exactly_pillows_nearest():
    from PIL import Image

    from lunarseg.runtime.imageio import resize

    rng = np.random.default_rng(1)
    for h, w in [(128, 192), (7, 5), (33, 17)]:
        for hh, ww in [(480, 720), (3, 4), (1000, 31)]:
            labels = rng.integers(0, 4, (h, w), dtype=np.uint8)
            want = np.asarray(Image.fromarray(labels).resize((ww, hh), Image.NEAREST))
            assert np.array_equal(resize(labels, (hh, ww), nearest=True), want)


def test_model_pixels_are_gray_first_and_within_a_gray_level_of_plain_bilinear():
    from PIL import Image

    from lunarseg.runtime.imageio import to_model_pixels

    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[0:480, 0:720]
    base = 120 + 60 * np.sin(xx / 37.0) * np.cos(yy / 23.0) + rng.normal(0, 8, (480, 720))
    frame = np.clip(np.stack([base, base * 0.98, base * 0.9], axis=2), 0, 255).astype(np.uint8)
    got = to_model_pixels(frame, (128, 192), "gray")
    assert got.shape == (128, 192) and got.dtype == np.uint8
    exact = np.asarray(Image.fromarray(frame).convert("L").resize((192, 128), Image.BILINEAR)).astype(int)
    diff = np.abs(got.astype(int) - exact)
    assert diff.mean() < 1.0 and diff.max() <= 8
    rgb = to_model_pixels(frame, (128, 192), "rgb")
    assert rgb.shape == (128, 192, 3)
    assert np.array_equal(to_model_pixels(frame[:, :, 0], (480, 720), "gray"), frame[:, :, 0])  # same size: as is


def _pillow_antialiased(arr, h, w):
    """The previous definition: Pillow's box reduce (REDUCING_GAP rule), then Pillow's bilinear."""
    from PIL import Image

    from lunarseg.runtime.imageio import REDUCING_GAP

    img = Image.fromarray(arr)
    fx, fy = int(img.width / w / REDUCING_GAP) or 1, int(img.height / h / REDUCING_GAP) or 1
    if fx > 1 or fy > 1:
        img = img.reduce((fx, fy))
    return np.asarray(img.resize((w, h), Image.BILINEAR)).astype(int)


@pytest.mark.parametrize("src", [(480, 720), (37, 53), (5, 5), (1, 7), (100, 1000)])
@pytest.mark.parametrize("dst", [(256, 384), (128, 192), (3, 4), (1, 1), (11, 997)])
def test_antialiased_resize_is_within_one_gray_level_of_pillows_reduce_then_bilinear(src, dst):
    from lunarseg.runtime.imageio import resize

    rng = np.random.default_rng(src[0] * 7 + dst[1])
    for shape in (src, (*src, 3)):
        arr = rng.integers(0, 256, shape, dtype=np.uint8)
        got = resize(arr, dst)
        assert got.shape == (*dst, *shape[2:]) and got.dtype == np.uint8
        assert np.abs(got.astype(int) - _pillow_antialiased(arr, *dst)).max() <= 1


def test_resize_of_a_camera_frame_to_the_model_reads_strided_windows_not_gathers():
    from lunarseg.runtime.imageio import axis_plan

    cols, rows = axis_plan(720, 384), axis_plan(480, 256)
    assert (cols.block, cols.stride) == (8, 15) and (rows.block, rows.stride) == (8, 15)
    assert axis_plan(721, 384).stride is None  # no short period: gathered windows, same weights


def test_resize_weights_of_each_output_sum_to_one_and_stay_in_their_window():
    from lunarseg.runtime.imageio import axis_weights

    for n_in, n_out in [(720, 384), (720, 192), (53, 97), (1, 4)]:
        w = axis_weights(n_in, n_out)
        assert w.shape == (n_out, n_in) and np.allclose(w.sum(axis=1), 1.0) and (w >= 0).all()


def test_gray_is_itu_601_luma_with_pillows_integer_rounding_on_random_frames():
    from lunarseg.runtime.imageio import to_gray

    rng = np.random.default_rng(5)
    for shape in [(480, 720, 3), (7, 3, 3), (1, 1, 3)]:
        rgb = rng.integers(0, 256, shape, dtype=np.uint8)
        r, g, b = (rgb[:, :, i].astype(np.uint32) for i in range(3))
        want = ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)
        assert np.array_equal(to_gray(rgb), want)
