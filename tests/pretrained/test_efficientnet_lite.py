"""EfficientNet-Lite0: TF-style padding, the encoder interface, the packaged ImageNet weights on real photos."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from polymodal.modules.encoders.efficientnet_lite import EfficientNetLite0, SameConv2d, same_padding
from polymodal.pretrained.imagenet import EFFICIENTNET_LITE0_PREPROCESS, imagenet_classes


def test_same_padding_matches_tensorflow_examples():
    # TF "SAME": total = max((ceil(n/s) - 1) * s + k - n, 0), the odd pixel goes after.
    assert same_padding(224, 3, 2) == (0, 1)
    assert same_padding(56, 5, 2) == (1, 2)
    assert same_padding(225, 3, 2) == (1, 1)
    assert same_padding(14, 5, 1) == (2, 2)
    assert same_padding(7, 1, 1) == (0, 0)


@pytest.mark.parametrize("size", [7, 8, 15, 16])
@pytest.mark.parametrize(("kernel", "stride"), [(3, 1), (5, 1), (3, 2), (5, 2)])
def test_same_conv_against_explicit_pad_reference(size, kernel, stride):
    conv = SameConv2d(2, 3, kernel, stride)
    x = torch.randn(1, 2, size, size)
    out = conv(x)
    assert out.shape[-2:] == (math.ceil(size / stride),) * 2
    # Reference: TF pads the total it needs, the extra pixel bottom/right.
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    padded = nn.functional.pad(x, (total // 2, total - total // 2) * 2)
    torch.testing.assert_close(out, nn.functional.conv2d(padded, conv.weight, stride=stride))
    if stride == 1:  # symmetric then: equals PyTorch's own padding
        torch.testing.assert_close(out, nn.functional.conv2d(x, conv.weight, padding=kernel // 2))


def test_encoder_interface_on_random_weights():
    model = EfficientNetLite0().eval()
    x = torch.randn(2, 3, 64, 96)
    out = model(x)
    assert out.tokens.shape == (2, 2 * 3, 1280) and out.mask is None and out.grid == (2, 3)
    torch.testing.assert_close(out.pooled, out.tokens.mean(1))
    torch.testing.assert_close(model.classify(x), model._fc(out.pooled))
    assert model.output_dim == 1280 and len(model.blocks()) == 16
    # 4.65M parameters, as the EfficientNet-Lite0 reference reports.
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(4.65e6, rel=0.01)


def test_grad_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = EfficientNetLite0(dropout=0.0).train()
    x = torch.randn(2, 3, 32, 32)
    grads = []
    for enable in (False, True):
        model.zero_grad()
        model.set_grad_checkpointing(enable)
        model.classify(x).square().sum().backward()
        grads.append(model._blocks[0]._depthwise_conv.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_packaged_state_dict_loads_strictly(efficientnet):
    # load_efficientnet_lite0 used strict=True; check the values really arrived (not just the keys).
    from polymodal.pretrained.locate import efficientnet_lite0_weights

    state = torch.load(efficientnet_lite0_weights(), map_location="cpu", weights_only=True)
    assert set(state) == set(efficientnet.state_dict())
    torch.testing.assert_close(efficientnet._fc.bias, state["_fc.bias"])
    assert not efficientnet.training


def test_imagenet_class_names_are_in_standard_order():
    names = imagenet_classes()
    assert len(names) == 1000
    # Anchors of the standard (sorted WordNet id) order used by every ImageNet classifier.
    expected = {
        0: "tench",
        1: "goldfish",
        281: "tabby cat",
        285: "Egyptian Mau",
        504: "coffee mug",
        657: "missile",
        812: "space shuttle",
        817: "sports car",
        967: "espresso",
        999: "toilet paper",
    }
    assert {i: names[i] for i in expected} == expected


# Photo -> ImageNet classes any of which counts as right.
EXPECTED_TOP5 = {
    "chelsea": {"tabby cat", "tiger cat", "Egyptian Mau"},
    "coffee": {"espresso", "tea cup", "coffee mug"},
    "rocket": {"missile", "space shuttle"},  # "missile" is also the cleaned name of "projectile, missile"
}


def test_top5_on_real_photos(efficientnet, photos):
    by_name = {p.name: p.image for p in photos}
    pixels = torch.stack([EFFICIENTNET_LITE0_PREPROCESS(by_name[n]) for n in EXPECTED_TOP5])  # (3, 3, 224, 224)
    assert pixels.shape == (3, 3, 224, 224)
    with torch.inference_mode():
        top5 = efficientnet.classify(pixels).topk(5).indices
    names = imagenet_classes()
    for (photo, allowed), row in zip(EXPECTED_TOP5.items(), top5.tolist()):
        predicted = [names[i] for i in row]
        assert allowed & set(predicted), f"{photo}: top-5 {predicted} has none of {allowed}"
        assert predicted[0] in allowed, f"{photo}: top-1 {predicted[0]!r} not in {allowed}"


def test_the_first_stages_alone_give_that_stage_of_the_packaged_network(efficientnet):
    """stages=5: the ImageNet weights of stages 1-5 only, their feature map (112-d, stride 16) as the tokens."""
    from polymodal.pretrained.imagenet import load_efficientnet_lite0

    cut = load_efficientnet_lite0(stages=5)
    assert cut.output_dim == 112 and len(cut.blocks()) == 11 and not hasattr(cut, "_fc")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        h = torch.nn.functional.relu6(efficientnet._bn0(efficientnet._conv_stem(x)))
        for block in efficientnet.blocks()[:11]:
            h = block(h)
        out = cut(x)
    assert out.grid == (4, 4) and torch.equal(out.tokens, h.flatten(2).transpose(1, 2))
    with pytest.raises(ValueError, match="no classifier"):
        cut.classify(x)
    with pytest.raises(ValueError, match="stages"):
        EfficientNetLite0(stages=0)
