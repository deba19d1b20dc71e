"""Segmenter: runtime output equals the bare engine; every frame type; tiling; batching; pre/post."""
import numpy as np
import pytest
from PIL import Image

from engines import needs_openvino
from runtime_models import models as build_models
from lunarseg.runtime import Segmenter, preprocess
from lunarseg.runtime.metadata import ModelMeta
from lunarseg.runtime.segmenter import tile_positions

ALL = ["bin.onnx", "bin.tflite", "bin_int8.tflite", "cls4.onnx", "cls4.tflite"]


@pytest.fixture(scope="session")
def models():
    return build_models()


@pytest.fixture(scope="session")
def segs(models):
    return {name: Segmenter.from_file(models[name]) for name in ALL}


def _frame(h, w, c=None, seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    shape = (h, w) if c is None else (h, w, c)
    return (rng.random(shape) * 255).astype(dtype)


def test_onnx_predict_equals_direct_onnxruntime_call(models, segs):
    import onnxruntime as ort

    for name in ("bin.onnx", "cls4.onnx"):
        seg = segs[name]
        sess = ort.InferenceSession(models[name], providers=["CPUExecutionProvider"])
        x = preprocess.prepare(_frame(40, 50, 3, seed=3), seg.meta)[None]
        direct = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        np.testing.assert_array_equal(seg.predict(x), direct)
        assert seg.backend_name == "onnxruntime"


def test_tflite_predict_equals_direct_litert_call_including_uint8_quantization(models, segs):
    from ai_edge_litert.interpreter import Interpreter

    for name in ("bin.tflite", "bin_int8.tflite", "cls4.tflite"):
        seg = segs[name]
        it = Interpreter(model_path=models[name], num_threads=1)
        it.allocate_tensors()
        i, o = it.get_input_details()[0], it.get_output_details()[0]
        x = preprocess.prepare(_frame(40, 50, 3, seed=4), seg.meta)[None]
        if i["dtype"] == np.uint8:
            s, z = i["quantization"]
            xin = np.clip(np.rint(x / s) + z, 0, 255).astype(np.uint8)
        else:
            xin = x
        it.set_tensor(i["index"], xin)
        it.invoke()
        y = it.get_tensor(o["index"])
        if o["dtype"] == np.uint8:
            s, z = o["quantization"]
            y = (y.astype(np.float32) - z) * s
        np.testing.assert_allclose(seg.predict(x), y, rtol=0, atol=1e-6)
        assert seg.backend_name == "litert"


def test_int8_model_stays_close_to_fp32(segs):
    x = preprocess.prepare(_frame(32, 32, seed=5), segs["bin.tflite"].meta)[None]
    diff = np.abs(segs["bin.tflite"].predict(x) - segs["bin_int8.tflite"].predict(x))
    assert diff.max() < 0.1


def test_onnx_and_tflite_exports_of_one_model_agree(segs):
    x = preprocess.prepare(_frame(32, 32, 3, seed=6), segs["cls4.onnx"].meta)[None]
    np.testing.assert_allclose(segs["cls4.onnx"].predict(x), segs["cls4.tflite"].predict(x), atol=1e-5)


def test_predict_loops_over_a_batch_when_the_model_has_a_fixed_batch_of_one(segs):
    seg = segs["bin.onnx"]
    assert seg.backend.batch == 1
    x = np.stack([preprocess.prepare(_frame(32, 32, seed=s), seg.meta) for s in range(3)])
    y = seg.predict(x)
    assert y.shape == (3, 32, 32, 1) and y.dtype == np.float32
    for k in range(3):
        np.testing.assert_array_equal(y[k], seg.predict(x[k:k + 1])[0])


def _engine_batches(monkeypatch, backend) -> list:
    """The batch size of every engine call `backend` makes from now on."""
    calls, run = [], backend.run

    def counted(x):
        calls.append(x.shape[0])
        return run(x)

    monkeypatch.setattr(backend, "run", counted)
    return calls


def test_tflite_dynamic_batch_runs_whole_batch(models, monkeypatch):
    seg = Segmenter.from_file(models["cls4.tflite"])
    assert seg.backend.batch is None
    calls = _engine_batches(monkeypatch, seg.backend)
    x = np.stack([preprocess.prepare(_frame(32, 32, 3, seed=s), seg.meta) for s in range(3)])
    y = seg.predict(x)
    assert calls == [3]
    assert y.shape == (3, 32, 32, 4)
    np.testing.assert_allclose(y[2], seg.predict(x[2:3])[0], atol=1e-6)
    np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-4)  # softmax


FRAME_KINDS = {
    "uint8_gray": lambda: _frame(37, 53),
    "uint8_gray_hw1": lambda: _frame(37, 53, 1),
    "uint8_rgb": lambda: _frame(41, 29, 3),
    "uint8_rgba": lambda: _frame(33, 65, 4),
    "uint16_gray": lambda: (np.random.default_rng(1).random((45, 31)) * 65535).astype(np.uint16),
    "uint16_rgb": lambda: (np.random.default_rng(1).random((23, 77, 3)) * 65535).astype(np.uint16),
    "float_unit_gray": lambda: np.random.default_rng(2).random((31, 31)).astype(np.float32),
    "float_255_rgb": lambda: (np.random.default_rng(2).random((64, 33, 3)) * 255).astype(np.float64),
    "tiny_1x1": lambda: _frame(1, 1),
    "wide_3x200": lambda: _frame(3, 200, 3),
}


@pytest.mark.parametrize("kind", sorted(FRAME_KINDS))
@pytest.mark.parametrize("model", ["bin.onnx", "bin_int8.tflite", "cls4.tflite"])
def test_every_frame_type_gives_a_mask_at_the_frames_own_size(segs, kind, model):
    frame = FRAME_KINDS[kind]()
    seg = segs[model]
    for tile in (False, True):
        r = seg.segment(frame, tile=tile)
        assert r.classes.shape == frame.shape[:2] and r.classes.dtype == np.uint8
        assert r.classes.max() < len(seg.meta.class_names)
        assert set(r.timings_ms) >= {"preprocess", "infer", "postprocess"}
        assert 0.0 <= r.stats["rock_fraction"] <= 1.0


def test_uint16_rgba_and_float_frames_match_their_uint8_equivalent(segs):
    seg = segs["cls4.onnx"]
    rgb8 = _frame(40, 60, 3, seed=9)
    want = seg.segment(rgb8).classes
    rgba = np.concatenate([rgb8, np.full((40, 60, 1), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(seg.segment(rgba).classes, want)
    np.testing.assert_array_equal(seg.segment(rgb8.astype(np.uint16) * 257).classes, want)
    np.testing.assert_array_equal(seg.segment(rgb8.astype(np.float32) / 255.0).classes, want)


def test_segment_reads_paths_and_gray_png_equals_array(tmp_path, segs):
    frame = _frame(50, 70, seed=11)
    Image.fromarray(frame).save(tmp_path / "f.png")
    seg = segs["bin.tflite"]
    np.testing.assert_array_equal(seg.segment(tmp_path / "f.png").classes, seg.segment(frame).classes)
    np.testing.assert_array_equal(seg.segment(str(tmp_path / "f.png")).classes, seg.segment(frame).classes)


def test_untiled_segment_is_prepare_predict_threshold_resize(segs):
    seg = segs["bin.onnx"]
    frame = _frame(70, 90, 3, seed=12)
    probs = seg.predict(preprocess.prepare(frame, seg.meta)[None])[0]
    want = preprocess.mask_to_frame_size(preprocess.probs_to_classes(probs, seg.meta), (70, 90))
    np.testing.assert_array_equal(seg.segment(frame).classes, want)


@pytest.mark.parametrize("model", ALL)
def test_tiled_equals_untiled_on_a_frame_of_the_models_own_size(segs, model):
    seg = segs[model]
    frame = _frame(seg.meta.height, seg.meta.width, 3, seed=13)
    np.testing.assert_array_equal(seg.segment(frame, tile=True).classes, seg.segment(frame).classes)


def test_tiled_blends_overlapping_tiles_by_averaging(segs):
    seg = segs["bin.onnx"]
    frame = _frame(32, 56, seed=14)  # tiles at x = 0, 24; columns 24..31 overlap
    x = preprocess.normalise(frame, seg.meta)
    left, right = seg.predict(np.stack([x[:, :32], x[:, 24:]]))
    blended = np.zeros((32, 56, 1), np.float32)
    blended[:, :24] = left[:, :24]
    blended[:, 32:] = right[:, 8:]
    blended[:, 24:32] = (left[:, 24:] + right[:, :8]) / 2
    np.testing.assert_array_equal(seg.segment(frame, tile=True).classes,
                                  preprocess.probs_to_classes(blended, seg.meta))


def test_tile_positions_cover_the_frame_with_overlap_and_end_aligned():
    assert tile_positions(32, 32) == [0]
    assert tile_positions(20, 32) == [0]
    assert tile_positions(100, 32) == [0, 24, 48, 68]
    pos = tile_positions(720, 256)
    assert pos[0] == 0 and pos[-1] == 720 - 256 and all(b - a <= 192 for a, b in zip(pos, pos[1:]))


def test_segment_batch_equals_segment_frame_by_frame(segs):
    for name in ("bin.onnx", "cls4.tflite"):
        seg = segs[name]
        frames = [_frame(30 + 7 * k, 41, 3, seed=k) for k in range(4)]
        batch = seg.segment_batch(frames)
        assert len(batch) == 4
        for f, r in zip(frames, batch):
            np.testing.assert_array_equal(r.classes, seg.segment(f).classes)
            assert r.stats == seg.segment(f).stats


def test_softmax_model_gives_class_indices_and_class_fractions(segs):
    r = segs["cls4.onnx"].segment(_frame(64, 64, 3, seed=15))
    assert set(np.unique(r.classes)) <= {0, 1, 2, 3}
    assert abs(sum(r.stats["class_fractions"].values()) - 1.0) < 1e-9
    rock = np.isin(r.classes, (2, 3)).mean()
    assert r.stats["rock_fraction"] == pytest.approx(rock)


# ---- preprocess: the single definition ---------------------------------------------------

def _meta(**kw):
    return ModelMeta(input_shape=[1, 8, 12, 1], **kw)


def test_prepare_converts_colour_resizes_and_normalises():
    meta = _meta()
    frame = np.full((16, 24, 3), (255, 0, 0), np.uint8)
    x = preprocess.prepare(frame, meta)
    assert x.shape == (8, 12, 1) and x.dtype == np.float32
    np.testing.assert_allclose(x, 76 / 255.0, atol=1e-7)  # ITU-R 601 luma of pure red
    rgb = ModelMeta(input_shape=[1, 8, 12, 3], colour_mode="rgb", normalisation={"scale": 2.0, "offset": -1.0})
    y = preprocess.prepare(np.zeros((5, 5), np.uint8), rgb)
    assert y.shape == (8, 12, 3) and np.all(y == -1.0)


def test_probs_to_classes_thresholds_sigmoid_and_argmaxes_softmax():
    meta = _meta(threshold=0.3)
    p = np.array([[[0.2], [0.3], [0.31]]], np.float32)
    assert preprocess.probs_to_classes(p, meta).tolist() == [[0, 0, 1]]
    soft = ModelMeta(input_shape=[1, 8, 12, 1], task="4class", output_activation="softmax",
                     class_names=["background", "sky", "small_rock", "large_rock"])
    q = np.array([[[0.1, 0.2, 0.6, 0.1], [0.7, 0.1, 0.1, 0.1]]], np.float32)
    assert preprocess.probs_to_classes(q, soft).tolist() == [[2, 0]]
    assert preprocess.rock_classes(soft) == (2, 3)
    assert preprocess.display_values(np.array([[0, 1, 2, 3]], np.uint8), soft).tolist() == [[0, 85, 170, 255]]
    assert preprocess.display_values(np.array([[0, 1]], np.uint8), meta).tolist() == [[0, 255]]


def test_mask_to_frame_size_is_nearest_neighbour():
    m = np.array([[0, 1], [1, 0]], np.uint8)
    out = preprocess.mask_to_frame_size(m, (4, 6))
    assert out.shape == (4, 6) and set(np.unique(out)) == {0, 1}
    assert out[0, 0] == 0 and out[0, 5] == 1 and out[3, 0] == 1


# ---- the optional OpenVINO engine on the same .onnx files ----------------------------------

@needs_openvino
def test_openvino_engine_matches_onnxruntime_on_the_same_file(models, segs):
    for name in ("bin.onnx", "cls4.onnx"):
        ov = Segmenter.from_file(models[name], backend="openvino")
        assert ov.backend_name == "openvino" and ov.meta == segs[name].meta
        x = np.stack([preprocess.prepare(_frame(40, 50, 3, seed=s), ov.meta) for s in (4, 5, 6)])
        np.testing.assert_allclose(ov.predict(x), segs[name].predict(x), atol=1e-4)  # batch 3 through batch-1 engine
        frame = _frame(60, 90, 3, seed=7)
        assert np.array_equal(ov.segment(frame).classes, segs[name].segment(frame).classes)


def test_engines_for_lists_the_default_engine_first():
    from lunarseg.runtime.backends import engines_for

    assert engines_for("m.onnx", installed_only=False) == ["onnxruntime", "openvino"]
    assert engines_for("m.tflite", installed_only=False) == ["litert"]
    assert engines_for("m.pb", installed_only=False) == []


def test_planner_options_skip_the_frame_mask_or_the_stats_and_keep_the_model_size_mask(segs):
    seg = segs["bin.onnx"]
    frame = _frame(70, 90, 3, seed=11)
    full = seg.segment(frame)
    lean = seg.segment(frame, frame_mask=False)
    assert lean.classes is None and lean.stats == full.stats
    assert np.array_equal(lean.model_classes, full.model_classes)
    assert lean.model_classes.shape == (seg.meta.height, seg.meta.width)
    assert np.array_equal(preprocess.mask_to_frame_size(lean.model_classes, (70, 90)), full.classes)
    bare = seg.segment(frame, with_stats=False)
    assert bare.stats is None and np.array_equal(bare.classes, full.classes)


def test_float_engines_take_normalised_pixels_and_quantized_ones_a_lookup_of_every_pixel_value(segs):
    """pixel_table: the quantized engine input of each pixel value 0–255, exactly what normalising and
    quantizing the pixel gives; a float engine has none."""
    for name in ("bin.onnx", "bin.tflite", "cls4.tflite"):
        assert segs[name].backend.pixel_table() is None, name
    seg = segs["bin_int8.tflite"]
    table = seg.backend.pixel_table()
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    assert table.dtype == seg.backend.inp["dtype"] and table.shape == (256,)
    scale, zero = seg.backend.in_q
    np.testing.assert_array_equal(table.reshape(pixels.shape),
                                  np.clip(np.rint(pixels * np.float32(1 / 255) / np.float32(scale)) + zero, 0, 255))


@pytest.mark.parametrize("in_q", [None, (0.8 / 255, 3)], ids=["model's own (identity lookup)", "other scale and zero"])
def test_a_quantized_input_engine_segments_exactly_as_normalise_then_quantize_would(models, in_q):
    """The lookup path (segment) and the float path (prepare → predict) give the same masks,
    whether the lookup is the identity (the model's scale is 1/255, zero 0) or not."""
    seg = Segmenter.from_file(models["bin_int8.tflite"])
    if in_q is not None:
        seg.backend.in_q = in_q
        seg = Segmenter(seg.backend, seg.path)
    assert seg._table_is_identity == (in_q is None)
    for seed, shape in ((21, (70, 90, 3)), (22, (32, 32)), (23, (120, 40))):
        frame = _frame(*shape[:2], *shape[2:], seed=seed)
        probs = seg.predict(preprocess.prepare(frame, seg.meta)[None])[0]
        want = preprocess.probs_to_classes(probs, seg.meta)
        got = seg.segment(frame)
        np.testing.assert_array_equal(got.model_classes, want)
        np.testing.assert_array_equal(got.classes, preprocess.mask_to_frame_size(want, frame.shape[:2]))
        assert want.any() and not want.all(), "the mask should hold both classes"


def test_a_file_with_a_fixed_batch_above_one_keeps_the_float_path_that_pads_its_batch(models):
    backend = Segmenter.from_file(models["bin_int8.tflite"]).backend
    assert Segmenter(backend, "x.tflite")._table is not None
    backend.batch = 3
    assert Segmenter(backend, "x.tflite")._table is None


def test_a_fixed_batch_above_one_is_filled_by_padding_and_the_padding_is_dropped(models, monkeypatch):
    seg = Segmenter.from_file(models["cls4.tflite"])  # a dynamic batch, told to take exactly 2 frames a call
    x = np.stack([preprocess.prepare(_frame(32, 32, 3, seed=s), seg.meta) for s in range(3)])
    one_by_one = np.concatenate([seg.predict(x[k:k + 1]) for k in range(3)])
    seg.backend.batch = 2
    calls = _engine_batches(monkeypatch, seg.backend)
    y = seg.predict(x)
    assert calls == [2, 2] and y.shape == one_by_one.shape
    np.testing.assert_allclose(y, one_by_one, atol=1e-6)
