"""scripts/mirror_views_eval.py: a mirrored or turned image's detector maps read back as upright."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fracsight.explain.detections import decode_detections  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "mirror_views_eval.py"
STRIDE, CELLS = 8, 48


def _script():
    spec = importlib.util.spec_from_file_location("mirror_views_eval", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _maps(box: tuple[float, float, float, float]):
    """A detector's (centre logits, size, offset) maps, batch of one, holding exactly ``box``."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2 / STRIDE, (y0 + y1) / 2 / STRIDE
    col, row = int(cx), int(cy)
    centre = torch.full((1, CELLS, CELLS), -9.0)
    centre[0, row, col] = 3.0
    size = torch.zeros(1, 2, CELLS, CELLS)
    size[0, :, row, col] = torch.tensor([np.log((x1 - x0) / STRIDE), np.log((y1 - y0) / STRIDE)])
    offset = torch.full((1, 2, CELLS, CELLS), 0.5)
    offset[0, :, row, col] = torch.tensor([cx - col, cy - row])
    return centre, size, offset


def test_unmirrored_maps_give_the_upright_box() -> None:
    module = _script()
    box = (101.0, 40.0, 141.0, 90.0)
    side = CELLS * STRIDE
    mirrored_box = (side - box[2], box[1], side - box[0], box[3])
    centre, size, offset = module.unmirror(*_maps(mirrored_box))
    boxes, _ = decode_detections(centre[0].numpy(), size[0].numpy(), offset[0].numpy(), STRIDE, 0.5)
    np.testing.assert_allclose(boxes[0], box, atol=1e-3)
    # turned by 180 degrees: both axes
    turned_box = (side - box[2], side - box[3], side - box[0], side - box[1])
    centre, size, offset = module.unturn(*_maps(turned_box))
    boxes, _ = decode_detections(centre[0].numpy(), size[0].numpy(), offset[0].numpy(), STRIDE, 0.5)
    np.testing.assert_allclose(boxes[0], box, atol=1e-3)
    # the mean of a view with itself is that view
    maps = _maps(box)
    mean = module.mean_of(maps, maps, maps)
    for a, b in zip(mean, maps, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
