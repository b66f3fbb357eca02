from dataclasses import replace

import pytest
import torch
import yaml

from conftest import ROOT
from sslandmarks.config import HeadConfig, ModelConfig, load_config
from sslandmarks.errors import UserError
from sslandmarks.inference import predict_all
from sslandmarks.losses import attribute_losses
from sslandmarks.models import MODELS, ModelOutput, build_model, check_config, sync_batchnorm

SMALL = ModelConfig(
    input_size=(24, 28), num_landmarks=3, kernel=3, width=4, depth=2, pointwise=(4,), mlp_hidden=(8,),
    heads=(HeadConfig("cls", "class", classes=4), HeadConfig("pose", "regression", dims=3)),
)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_contract(name):
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
    if name != "commmt":  # every model with maps exposes the layers that make them (bench's ceiling)
        assert torch.equal(model.heatmaps(x), out.heatmaps)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_declared_facts_match_what_the_model_does(name):
    """``MODELS[name].elt``: the landmarks carry a gradient back to the image (what ELT needs) exactly
    when the table says so; ``landmark_loss`` names a loss of the coordinates or of the maps."""
    entry = MODELS[name]
    torch.manual_seed(0)  # a fixed initialisation: not whatever state earlier tests left the generator in
    x = torch.rand(2, 1, 24, 28, requires_grad=True)
    landmarks = build_model(replace(SMALL, name=name)).eval()(x).landmarks
    grad = torch.autograd.grad(landmarks.sum(), x, allow_unused=True)[0] if landmarks.requires_grad else None
    assert (grad is not None and bool(grad.abs().sum() > 0)) == entry.elt
    assert entry.landmark_loss == ("l2" if entry.elt else "heatmap_ce")


def test_config_check_refuses_elt_on_arg_max_models_and_keys_a_model_ignores():
    blocks = ROOT / "configs" / "blocks.yaml"
    with pytest.raises(UserError, match="heatmapmt reads its landmarks by arg-max"):
        check_config(load_config(blocks, ["model.name=heatmapmt", "loss.variant=L+ELT+A"]))
    with pytest.raises(UserError, match="rcn reads its landmarks by arg-max"):
        check_config(load_config(blocks, ["model.name=rcn", "loss.variant=L+ELT", "model.kernel=9",
                                          "model.depth=6", "model.pointwise=[8]"]))
    with pytest.raises(UserError, match="model.kernel is set, but rcn\\+ does not read it"):
        check_config(load_config(blocks, ["model.name=rcn+", "model.kernel=3"]))
    with pytest.raises(UserError, match="model.levels is set, but seqmt does not read it"):
        check_config(load_config(blocks, ["model.levels=2"]))
    check_config(load_config(blocks, ["model.name=heatmapmt", "loss.variant=L+A", "model.beta=1.0"]))  # default


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_set_only_what_their_model_reads(path):
    cfg = load_config(path)
    check_config(cfg)
    assert set(yaml.safe_load(path.read_text())["model"]) <= MODELS[cfg.model.name].reads


def test_sync_batchnorm_keeps_names_and_is_batchnorm_in_one_process():
    """Swapping BatchNorm for SyncBatchNorm changes no parameter or buffer name (checkpoints load either
    way) and, without other processes, computes exactly what BatchNorm does (train and eval mode)."""
    cfg = replace(SMALL, batchnorm=True)
    torch.manual_seed(0)
    plain = build_model(cfg)
    synced = sync_batchnorm(build_model(cfg), cpu=True)
    synced.load_state_dict(plain.state_dict())
    assert list(synced.state_dict()) == list(plain.state_dict())
    assert any(type(m).__name__ == "GlobalBatchNorm" for m in synced.modules())
    x = torch.rand(4, 1, 24, 28)
    for mode in (True, False):
        plain.train(mode)
        synced.train(mode)
        torch.manual_seed(1)
        a = plain(x).landmarks
        torch.manual_seed(1)
        assert torch.equal(a, synced(x).landmarks)
    assert torch.equal(plain.state_dict()["localizer.1.running_var"], synced.state_dict()["localizer.1.running_var"])


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
    torch.manual_seed(0)
    cfg = replace(SMALL, name="rcn+", levels=2)
    model = build_model(cfg)
    out = model(torch.rand(2, 1, 24, 28))
    assert out.heatmaps.shape == (2, 3, 24, 28)  # back at full resolution, odd sizes included
    out.attributes["cls"].sum().backward()
    assert model.down[0][0].weight.grad.abs().sum() > 0
    assert MODELS["rcn"].landmark_loss == "heatmap_ce" and MODELS["rcn+"].landmark_loss == "l2"


@pytest.mark.parametrize("stride", [2, 4])
def test_rcn_stem_stride_centres_heatmap_pixels_where_coords_says(stride):
    """With ``stem_stride`` s, heatmap pixel i must sit over input pixel s*i + (s-1)/2 (coords.heatmap_to_image).
    A uniform stem kernel answers a point at x by the windows that cover it; their centre, mapped back, is x
    on average over positions (a 3x3 kernel at stride 2 would be half a pixel off)."""
    import torch.nn.functional as F

    from sslandmarks.coords import heatmap_to_image

    cfg = replace(SMALL, name="rcn+", levels=1, stem_stride=stride, input_size=(32, 32))
    conv = build_model(cfg).stem[0]
    errors = []
    for x in range(8, 24):
        img = torch.zeros(1, 1, 1, 32)
        img[..., x] = 1.0
        out = F.conv2d(img, torch.ones(1, 1, 1, conv.kernel_size[1]), stride=(1, stride), padding=(0, conv.padding[1]))
        pos = torch.arange(out.shape[-1], dtype=torch.float32)
        centre = float((out[0, 0, 0] * pos).sum() / out.sum())
        errors.append(float(heatmap_to_image(torch.tensor(centre), stride)) - x)
    assert out.shape[-1] == 32 // stride
    assert abs(sum(errors) / len(errors)) < 1e-6 and max(map(abs, errors)) <= (stride - 1) / 2 + 1e-6


def test_test_time_mirroring_maps_mirrored_predictions_back():
    """A 'model' that answers with fixed points: its mirrored answer, mapped back and renumbered, is the
    mirror image of the fixed points, so the average sits halfway; mirror-symmetric points stay put."""
    class Fixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.tensor([[2.0, 3.0], [7.0, 3.0], [4.5, 6.0]]))

        def forward(self, x):
            b = x.shape[0]
            return ModelOutput(x, self.p.expand(b, 3, 2), {"c": x.flatten(1)[:, :2]})

    images = torch.zeros(2, 1, 10, 10, dtype=torch.uint8)
    images[:, 0, 0, 0] = 255
    lm, attrs = predict_all(Fixed(), images, flip_perm=(1, 0, 2))
    # mirrored answer: (2,3)->(7,3) renumbered to slot 1, (7,3)->(2,3) to slot 0, (4.5,6) stays: a fixed point
    assert torch.allclose(lm[0], torch.tensor([[2.0, 3.0], [7.0, 3.0], [4.5, 6.0]]))
    lm_asym, _ = predict_all(Fixed(), images, flip_perm=(0, 1, 2))  # no renumbering: points average to the axis
    assert torch.allclose(lm_asym[0, :, 0], torch.tensor([4.5, 4.5, 4.5]))
    assert torch.allclose(attrs["c"][0], torch.tensor([0.5, 0.0]))  # pixel (0,0) lit directly, (9,0) mirrored
