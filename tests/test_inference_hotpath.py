"""The per-image hot path kept fast by the benchmark work: micro-batched ONNX runs, run-based labelling."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from fracsight.explain import label_components
from fracsight.inference.onnx_model import SPIN_US, OnnxModel


def _dynamic_session(bundle: Path):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    return ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])


def test_the_batch_dimension_is_fixed_to_one_image(tiny_bundle: Path) -> None:
    """Static shapes let onnxruntime fuse the 'same' padding into the convolutions (faster on CPU)."""
    model = OnnxModel(tiny_bundle)
    assert model.session.get_inputs()[0].shape[0] == 1 and model.max_batch == 1
    batch = np.random.default_rng(0).random((5, 64, 64), dtype=np.float32)
    fixed = model.run(batch)
    dynamic = _dynamic_session(tiny_bundle).run(None, {"image": batch[:, None]})
    for name, want in zip(model.output_names, dynamic, strict=True):
        assert fixed[name].shape == want.shape
        np.testing.assert_allclose(fixed[name], want, rtol=1e-5, atol=1e-5, err_msg=name)


def test_workers_spin_briefly_and_stop_after_a_run(tiny_bundle: Path) -> None:
    """Spinning capped within a run and stopped after it (docs/benchmark.md: next to other busy
    processes onnxruntime's long default spin cost the INT8 default 1.3-1.7x)."""
    options = OnnxModel(tiny_bundle).session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.spin_duration_us") == str(SPIN_US)
    assert options.get_session_config_entry("session.force_spinning_stop") == "1"
    assert 0 < SPIN_US <= 1000


def test_micro_batches_give_the_same_outputs(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bundle whose batch axis stays dynamic is fed ``max_batch`` images per call."""
    model = OnnxModel(tiny_bundle)
    session = _dynamic_session(tiny_bundle)
    calls: list[int] = []

    class Counting:
        def run(self, names, feed):  # type: ignore[no-untyped-def]
            calls.append(len(feed["image"]))
            return session.run(names, feed)

    monkeypatch.setattr(model, "session", Counting())
    monkeypatch.setattr(model, "max_batch", 3)
    batch = np.random.default_rng(0).random((7, 64, 64), dtype=np.float32)
    split = model.run(batch)
    assert calls == [3, 3, 1]
    monkeypatch.setattr(model, "max_batch", 64)
    whole = model.run(batch)
    assert calls[3:] == [7]
    assert split.keys() == whole.keys()
    for name in whole:
        assert split[name].shape[0] == 7
        np.testing.assert_allclose(split[name], whole[name], rtol=1e-6, atol=1e-6, err_msg=name)


def test_label_components_matches_scikit_image() -> None:
    measure = pytest.importorskip("skimage.measure")
    rng = np.random.default_rng(1)
    for _ in range(300):
        h, w = rng.integers(1, 30, size=2)
        mask = rng.random((h, w)) < rng.uniform(0.05, 0.95)
        labels, n = label_components(mask)
        expected = measure.label(mask, connectivity=2)  # also numbered in raster order
        assert n == expected.max()
        np.testing.assert_array_equal(labels, expected)


@pytest.mark.parametrize(
    "mask",
    [np.zeros((0, 0), dtype=bool), np.zeros((4, 5), dtype=bool), np.ones((1, 1), dtype=bool)],
    ids=["empty", "background", "one-pixel"],
)
def test_label_components_edge_cases(mask: np.ndarray) -> None:
    labels, n = label_components(mask)
    assert labels.shape == mask.shape and labels.dtype == np.int32
    assert n == int(mask.any()) and np.array_equal(labels > 0, mask)


def test_labelling_a_full_heatmap_is_cheap() -> None:
    """A map that is foreground everywhere (a confident model) was the slow case of a pixel flood fill."""
    mask = np.ones((96, 96), dtype=bool)
    label_components(mask)
    start = time.process_time()
    for _ in range(20):
        labels, n = label_components(mask)
    per_call = (time.process_time() - start) / 20
    assert n == 1 and labels.min() == 1
    assert per_call < 0.005, f"{per_call * 1e3:.1f} ms per 96x96 map"


def test_cuda_is_asked_for_only_where_it_loads(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """onnxruntime-gpu on a machine without the NVIDIA driver (this one): the CPU alone, said once."""
    import ctypes

    import onnxruntime as ort

    from fracsight.inference import onnx_model

    try:
        ctypes.CDLL("libcuda.so.1")
        pytest.skip("this machine has an NVIDIA driver")
    except OSError:
        pass
    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    onnx_model.cuda_loads.cache_clear()
    try:
        with caplog.at_level("WARNING", logger="fracsight.inference"):
            assert onnx_model.execution_providers() == ["CPUExecutionProvider"]
            assert onnx_model.execution_providers() == ["CPUExecutionProvider"]
    finally:
        onnx_model.cuda_loads.cache_clear()
    assert [r.getMessage() for r in caplog.records] == [
        "CUDA is unavailable here (libcuda.so.1 cannot be loaded): running on the CPU"
    ]
