"""Registry, offline ImageNet weights, forward/backward and ONNX export for every architecture."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fracsight.errors import ConfigError, UnknownModelError  # noqa: E402
from fracsight.models import HeadConfig, create_model, list_models  # noqa: E402

HEADS = HeadConfig(regions=("hand", "leg", "hip", "shoulder"), classes=("a", "b", "c"))


def test_registry_lists_the_compared_architectures():
    names = list_models()
    for expected in (
        "efficientnet_lite0",
        "efficientnet_lite2",
        "resnet50",
        "densenet121",
        "vgg16",
        "mobilenetv2",
        "small_cnn",
    ):
        assert expected in names
    assert list_models("efficientnet*") == ["efficientnet_lite0", "efficientnet_lite2"]


def test_unknown_architecture_lists_known_ones():
    with pytest.raises(UnknownModelError, match=r"known: .*resnet50"):
        create_model("resnet9000")


def test_no_offline_imagenet_weights_for_resnet():
    with pytest.raises(ConfigError, match="no offline ImageNet weights"):
        create_model("resnet50", pretrained=True)


@pytest.mark.parametrize(
    "name", ["efficientnet_lite0", "mobilenetv2", "resnet50", "densenet121", "vgg16", "small_cnn"]
)
def test_forward_backward_shapes(name):
    model = create_model(name, HEADS)
    x = torch.rand(2, 1, 64, 64)
    out = model(x)
    assert out["fracture"].shape == (2,)
    assert out["region"].shape == (2, 4)
    assert out["class"].shape == (2, 3)
    assert out["mask"].shape == out["cam"].shape == (2, 2, 2)
    assert out["embedding"].shape == (2, model.num_features)
    loss = out["fracture"].sum() + out["region"].sum() + out["class"].sum() + out["mask"].sum()
    loss.backward()
    assert model.fracture_head.weight.grad is not None
    assert model.fracture_head.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["efficientnet_lite0", "small_cnn"])
def test_onnx_export_matches_torch(name, tmp_path):
    from fracsight.models.export import export_onnx

    model = create_model(name, HeadConfig(regions=("hand", "leg")))
    names = export_onnx(model, tmp_path / "m.onnx", input_size=64)  # export_onnx checks parity itself
    assert names == ["fracture", "mask", "cam", "embedding", "region"]


@pytest.mark.parametrize("size", [64, 71])
def test_static_same_padding_keeps_outputs(size):
    from timm.layers import Conv2dSame

    from fracsight.models.export import with_static_same_padding

    model = create_model("efficientnet_lite0", HEADS).eval()
    static = with_static_same_padding(model, size)
    assert any(isinstance(m, Conv2dSame) for m in model.modules())  # the original is left alone
    assert not any(isinstance(m, Conv2dSame) for m in static.modules())
    x = torch.rand(2, 1, size, size)
    with torch.no_grad():
        want, got = model(x), static(x)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-6)


def test_onnx_export_pads_by_constants(tmp_path):
    import onnx

    from fracsight.models.export import export_onnx

    export_onnx(create_model("efficientnet_lite0", HEADS), tmp_path / "m.onnx", input_size=64)
    ops = {node.op_type for node in onnx.load(str(tmp_path / "m.onnx")).graph.node}
    assert "Shape" not in ops and "Ceil" not in ops  # no padding worked out at run time


def test_split_trunk_equals_full_forward():
    model = create_model("efficientnet_lite0", HEADS, pretrained=True).eval()
    x = torch.rand(1, 1, 96, 96)
    with torch.no_grad():
        full = model(x)["fracture"]
        for split in range(model.split_points() + 1):
            part = model.forward_heads(model.forward_suffix(model.forward_prefix(x, split), split))[
                "fracture"
            ]
            torch.testing.assert_close(part, full)


def test_mapped_lite0_weights_recognise_a_cat():
    """The renamed offline weights load strictly and classify scikit-image's cat as a cat."""
    import timm
    from PIL import Image
    from skimage import data

    from fracsight.models.weights import efficientnet_lite_state_dict

    rgb = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    rgb.load_state_dict(efficientnet_lite_state_dict("lite0", [len(s) for s in rgb.blocks]), strict=True)
    rgb.eval()
    img = np.asarray(Image.fromarray(data.chelsea()).resize((224, 224)), dtype=np.float32) / 255
    x = (torch.from_numpy(img).permute(2, 0, 1)[None] - 0.5) / 0.5
    with torch.no_grad():
        top5 = rgb(x).softmax(1)[0].topk(5).indices.tolist()
    assert top5[0] in range(281, 286)  # ImageNet's domestic cat classes (tabby, tiger cat, Persian, ...)


def test_grayscale_stem_equals_rgb_on_grey_input():
    """Summing the stem filters over RGB gives identical activations for a grey image."""
    import timm

    from fracsight.models.weights import efficientnet_lite_state_dict

    rgb = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    state = {
        k: v
        for k, v in efficientnet_lite_state_dict("lite0", [len(s) for s in rgb.blocks]).items()
        if not k.startswith("classifier")
    }
    rgb.load_state_dict(state)
    rgb.eval()
    gray = create_model("efficientnet_lite0", pretrained=True).eval()
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        want = rgb.forward_features((x.repeat(1, 3, 1, 1) - 0.5) / 0.5)
        got = gray.backbone.forward_features((x - 0.5) / 0.5)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_local_weights_file_is_loaded_without_unpickling(tmp_path):
    source = create_model("small_cnn")
    path = tmp_path / "backbone.pt"
    torch.save(source.backbone.state_dict(), path)
    model = create_model("small_cnn", pretrained=path)
    for (k, a), b in zip(
        source.backbone.state_dict().items(), model.backbone.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=k)
    bad = tmp_path / "evil.pt"
    torch.save({"x": Fraction(1, 3)}, bad)  # an arbitrary class: refused by the safe unpickler
    with pytest.raises(ConfigError, match="cannot load weights"):
        create_model("small_cnn", pretrained=bad)


def test_a_colour_weights_file_is_read_for_grey_and_other_shapes_are_named(tmp_path):
    """A published RGB state dict (a timm efficientnet_lite0's, a torchvision resnet50's): a
    size-mismatch traceback on the stem. Its stem is summed to the grey channel as the ImageNet
    weights are; a shape that differs otherwise is named; a fracsight checkpoint points to init=."""
    import timm

    rgb = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=0)
    path = tmp_path / "rgb.pt"
    torch.save(rgb.state_dict(), path)
    model = create_model("efficientnet_lite0", pretrained=path)
    torch.testing.assert_close(
        model.backbone.state_dict()["conv_stem.weight"],
        rgb.state_dict()["conv_stem.weight"].sum(1, keepdim=True),
    )
    odd = {**rgb.state_dict(), "bn1.weight": torch.ones(7)}
    torch.save(odd, tmp_path / "odd.pt")
    with pytest.raises(
        ConfigError, match=r"odd\.pt does not match efficientnet_lite0: bn1\.weight is \(7,\) there"
    ):
        create_model("efficientnet_lite0", pretrained=tmp_path / "odd.pt")
    # batch norm's counters are never missing: a file of 20 of small_cnn's 50 weights was taken
    part = dict(list(create_model("small_cnn").backbone.state_dict().items())[:24])
    torch.save(part, tmp_path / "part.pt")
    with pytest.raises(ConfigError, match="missing keys"):
        create_model("small_cnn", pretrained=tmp_path / "part.pt")
    ours = create_model("efficientnet_lite0")
    torch.save(ours.state_dict(), tmp_path / "best.pt")
    with pytest.raises(ConfigError, match="a fracsight checkpoint, which `--set init=` takes"):
        create_model("efficientnet_lite0", pretrained=tmp_path / "best.pt")
