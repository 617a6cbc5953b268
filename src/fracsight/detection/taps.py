"""Where the grafted heads read a bundle's network: tensors inside its ONNX graph.

A bundle's ``model.onnx`` is the frozen network the new heads are trained on. Its
intermediate tensors are found from the graph itself (no torch weights needed): the
last residual sum at strides 8 and 16, and the final feature map (what the pooled
``embedding`` averages).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fracsight.errors import ConfigError

__all__ = ["HEADS_PREFIX", "TAP_NAMES", "detector_nodes", "find_taps", "tapped_session", "with_outputs"]

TAP_NAMES = ("stride8", "stride16", "features")
HEADS_PREFIX = "heads/"  # of the grafted heads' node and tensor names (fracsight.detection.graft)


def detector_nodes(model) -> list[str]:  # onnx.ModelProto -> node names
    """The names of the grafted detector's nodes in ``model`` (none in a graph without one): its
    module is the heads' ``detector``, so torch's export names them ``/detector/...``."""
    return [node.name for node in model.graph.node if node.name.startswith(f"{HEADS_PREFIX}/detector/")]


def with_outputs(model, names: list[str]):  # onnx.ModelProto -> onnx.ModelProto
    """A copy of ``model`` that also returns the tensors ``names``."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    have = {o.name for o in copy.graph.output}
    for name in names:
        if name not in have:
            copy.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return copy


def find_taps(onnx_path: Path, input_size: int) -> dict[str, str]:
    """``{"stride8": tensor, "stride16": tensor, "features": tensor}`` for the graph at ``onnx_path``."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(onnx_path), load_external_data=False)
    producer = {out: node for node in model.graph.node for out in node.output}
    if "embedding" not in producer:
        raise ConfigError(
            f"{onnx_path} has no 'embedding' output to find its feature map from: the detector is "
            "trained on a bundle exported by fracsight export"
        )
    pooling = producer["embedding"]
    while pooling.op_type in ("QuantizeLinear", "DequantizeLinear"):  # an INT8 (QDQ) graph
        pooling = producer[pooling.input[0]]
    features = pooling.input[0]
    sums = [node.output[0] for node in model.graph.node if node.op_type == "Add"]
    session = ort.InferenceSession(
        with_outputs(model, sums).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    wanted = [o.name for o in session.get_outputs()]
    values = session.run(wanted, {"image": np.zeros((1, 1, input_size, input_size), np.float32)})
    side = {name: v.shape[-1] for name, v in zip(wanted, values, strict=True) if v.ndim == 4}
    taps = {"features": features}
    for stride, key in ((8, "stride8"), (16, "stride16")):
        found = [name for name in sums if side.get(name) == input_size // stride]
        if not found:
            raise ConfigError(
                f"{onnx_path} has no residual sum at stride {stride} for the detector to read: it "
                "needs a network with residual blocks at strides 8 and 16 (efficientnet_lite0 and its "
                "family; `fracsight models` lists the architectures)"
            )
        taps[key] = found[-1]  # the deepest one at that stride
    return taps


def tapped_session(onnx_path: Path, input_size: int, threads: int = 0):  # -> (ort.InferenceSession, names)
    """An onnxruntime session of the graph at ``onnx_path`` that returns its tapped maps, and their
    tensor names in :data:`TAP_NAMES` order (run it with ``session.run(names, {"image": x})``)."""
    import onnx
    import onnxruntime as ort

    taps = find_taps(onnx_path, input_size)
    names = [taps[t] for t in TAP_NAMES]
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(
        with_outputs(onnx.load(str(onnx_path), load_external_data=False), names).SerializeToString(),
        options,
        providers=["CPUExecutionProvider"],
    )
    return session, names
