"""The rows ``fracsight benchmark`` sets beside the bundle: the same network in eager torch, the
common ResNet50 recipe, and GPU throughput. torch is imported only here, and only when asked for."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fracsight.benchmark.contenders import Contender, throughput
from fracsight.benchmark.report import RESNET_ROW, Row
from fracsight.inference import Predictor
from fracsight.io import read_image

RESNET_SIZE = 224


class _TorchEngine:
    """Drop-in for :class:`OnnxModel` inside a Predictor: same inputs, same named outputs."""

    def __init__(self, model: Any, device: str) -> None:
        import torch

        self.torch, self.device = torch, device
        self.model = model.eval().to(device)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        with self.torch.inference_mode():
            out = self.model(self.torch.from_numpy(np.ascontiguousarray(batch[:, None])).to(self.device))
        return {k: v.float().cpu().numpy() for k, v in out.items()}


def torch_twin(predictor: Predictor, device: str) -> Predictor:
    """The predictor with its ONNX engine swapped for the same architecture in eager torch."""
    from fracsight.models import HeadConfig, create_model

    heads = HeadConfig(regions=predictor.regions, classes=predictor.classes)
    twin = copy.copy(predictor)
    twin.onnx = _TorchEngine(create_model(predictor.spec.architecture, heads), device)  # type: ignore[assignment]
    # heads grafted onto an exported graph (fracsight detector train) have no eager twin: the twin
    # times the network they read, with boxes traced on its map and no orientation step
    loc = {k: v for k, v in predictor.spec.localization.items() if k != "boxes"}
    twin.spec = dataclasses.replace(predictor.spec, localization=loc, orientation={})
    return twin


def recipe_rgb(path: Path) -> Image.Image:
    """An image as the ResNet recipe reads it: decoded by Pillow to RGB. A file Pillow cannot
    open or decode (a DICOM radiograph, a JPEG cut short: 49 in FracAtlas), which the bundle reads,
    is read by fracsight's reader and its grey copied to the three channels: one such file failed
    the whole benchmark after the bundle rows were timed."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except OSError:  # UnidentifiedImageError, "image file is truncated"
        grey = np.round(read_image(path).pixels * 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")


def resnet_recipe(batch: int) -> Contender:
    import torch

    try:
        from torchvision.models import resnet50

        model, source = resnet50(weights=None), "torchvision"
    except ImportError:
        import timm

        model, source = timm.create_model("resnet50", pretrained=False), "timm"
    model.eval()
    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)[:, None, None]
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32)[:, None, None]

    def prepare(path: Path) -> np.ndarray:
        rgb = recipe_rgb(path)
        scale = 256 / min(rgb.size)
        rgb = rgb.resize((round(rgb.width * scale), round(rgb.height * scale)), Image.Resampling.BILINEAR)
        left, top = (rgb.width - RESNET_SIZE) // 2, (rgb.height - RESNET_SIZE) // 2
        rgb = rgb.crop((left, top, left + RESNET_SIZE, top + RESNET_SIZE))
        x = np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / 255.0
        return (x - mean) / std

    def infer(batch_array: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return torch.softmax(model(torch.from_numpy(batch_array)), dim=1).numpy()

    def predict_all(paths: Sequence[Path]) -> None:
        with ThreadPoolExecutor(2) as pool:
            for i in range(0, len(paths), batch):
                infer(np.stack(list(pool.map(prepare, paths[i : i + batch]))))

    note = f"{source} resnet50, random weights; resize 256 + crop 224, RGB; no heatmap or boxes"
    return Contender(
        RESNET_ROW,
        "torch eager",
        RESNET_SIZE,
        lambda p: infer(prepare(p)[None]),
        predict_all,
        note,
    )


def gpu_row(predictor: Predictor, images: Sequence[Path], batch: int, allow_torch: bool) -> Row:
    import onnxruntime as ort

    from fracsight.inference.onnx_model import cuda_loads

    session = None
    if "CUDAExecutionProvider" in ort.get_available_providers() and cuda_loads():
        session = ort.InferenceSession(
            str(predictor.bundle_dir / "model.onnx"), providers=["CUDAExecutionProvider"]
        )
        if session.get_providers()[0] != "CUDAExecutionProvider":  # fell back to the CPU by itself
            session = None  # its figure was shown as "onnxruntime CUDA" throughput
    if session is not None:
        twin = copy.copy(predictor)
        twin.onnx = copy.copy(predictor.onnx)
        twin.onnx.session, twin.onnx.max_batch = session, batch  # GPU memory is not the CPU's concern
        engine = "onnxruntime CUDA"
    elif allow_torch and _torch_cuda():
        twin, engine = torch_twin(predictor, "cuda"), "torch eager CUDA"
    else:
        note = (
            "no CUDA device" if allow_torch else "no CUDA that onnxruntime can use here (torch not checked)"
        )
        return Row("GPU throughput", "-", predictor.spec.input_size, note=note)
    ips = throughput(lambda paths: list(twin.predict_many(paths, batch_size=batch)), images, batch)
    return Row("GPU throughput", engine, predictor.spec.input_size, throughput_ips=ips, note="same model")


def _torch_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())
