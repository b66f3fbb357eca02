import pytest
import torch

from sslandmarks.config import HeadConfig, ModelConfig
from sslandmarks.losses import attribute_losses
from sslandmarks.models import MODELS, ModelOutput, build_model

SMALL = ModelConfig(
    input_size=(24, 28), num_landmarks=3, kernel=3, width=4, depth=2, pointwise=(4,), mlp_hidden=(8,),
    heads=(HeadConfig("cls", "class", classes=4), HeadConfig("pose", "regression", dims=3)),
)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_contract(name):
    from dataclasses import replace

    model = build_model(replace(SMALL, name=name))
    x = torch.rand(2, 1, 24, 28)
    out = model(x)
    assert isinstance(out, ModelOutput)
    assert out.landmarks.shape == (2, 3, 2) and out.heatmaps.shape[:2] == (2, 3)
    assert out.attributes["cls"].shape == (2, 4) and out.attributes["pose"].shape == (2, 3)
    assert all(torch.isfinite(t).all() for t in (out.heatmaps, out.landmarks, *out.attributes.values()))
    # landmarks lie inside the input (x in [-0.5, W - 0.5], y in [-0.5, H - 0.5])
    assert (out.landmarks[..., 0] >= -0.5).all() and (out.landmarks[..., 0] <= 27.5).all()
    assert (out.landmarks[..., 1] >= -0.5).all() and (out.landmarks[..., 1] <= 23.5).all()
    # every parameter is reached by what some loss reads: coordinates (L2, ELT), maps (heatmap CE), heads
    (out.landmarks.sum() + out.heatmaps.sum() + sum(v.sum() for v in out.attributes.values())).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_seqmt_attribute_loss_reaches_conv_layers():
    torch.manual_seed(0)
    model = build_model(SMALL)
    out = model(torch.rand(4, 1, 24, 28))
    loss = attribute_losses(out.attributes, {"cls": torch.tensor([0, 1, 2, 3]), "pose": torch.zeros(4, 3)},
                            {"cls": "class", "pose": "regression"})
    sum(loss.values()).backward()
    first_conv = model.localizer[0]  # Seq-MT; RCN+ is checked below
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0


def test_seqmt_heads_read_only_landmarks():
    """The attributes are a function of the predicted coordinates alone (the Seq-MT bottleneck)."""
    model = build_model(SMALL).eval()
    out = model(torch.rand(3, 1, 24, 28))
    size = torch.tensor([28.0, 24.0])
    z = (2 * (out.landmarks + 0.5) / size - 1).flatten(1)
    assert torch.allclose(model.heads["cls"](z), out.attributes["cls"], atol=1e-6)


def test_rcn_plus_attribute_loss_reaches_the_encoder_and_rcn_trains_on_maps():
    from dataclasses import replace

    torch.manual_seed(0)
    cfg = replace(SMALL, name="rcn+", levels=2)
    model = build_model(cfg)
    out = model(torch.rand(2, 1, 24, 28))
    assert out.heatmaps.shape == (2, 3, 24, 28)  # back at full resolution, odd sizes included
    out.attributes["cls"].sum().backward()
    assert model.down[0][0].weight.grad.abs().sum() > 0
    rcn = build_model(replace(cfg, name="rcn"))
    assert rcn.landmark_loss == "heatmap_ce" and model.landmark_loss == "l2"
