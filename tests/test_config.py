import pytest
import torch

from conftest import ROOT
from sslandmarks import config
from sslandmarks.config import Config, from_dict, load_config, parse_overrides, to_dict, variant_terms, with_overrides
from sslandmarks.errors import UserError
from sslandmarks.models import build_model

CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def test_there_are_configs_and_the_package_ships_them():
    names = {p.name for p in CONFIGS}
    assert {"blocks.yaml", "shapes.yaml"} <= names
    assert names == {p.name for p in config.CONFIGS.glob("*.yaml")}  # ./configs is the packaged folder


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_loads_and_builds(path):
    cfg = load_config(path)
    model = build_model(cfg.model)
    assert sum(p.numel() for p in model.parameters()) > 0
    assert from_dict(to_dict(cfg)) == cfg  # round trip through plain data (checkpoints)


def test_overrides_and_variants():
    cfg = load_config(CONFIGS[0], ["loss.variant=L", "train.steps=7", "model.pointwise=[3, 4]"])
    assert cfg.loss.variant == "L" and cfg.train.steps == 7 and cfg.model.pointwise == (3, 4)
    assert variant_terms("L+ELT+A") == {"L", "ELT", "A"}
    assert parse_overrides(["variant=L+A"]) == {"loss": {"variant": "L+A"}}
    # YAML 1.1 reads 1e-3 (no dot) as a string; a float field still takes it
    assert load_config(CONFIGS[0], ["train.lr=1e-3"]).train.lr == 1e-3


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["train.stepz=3"], "unknown config key 'train.stepz'"),
        (["data.labelled_pct=0"], "outside (0, 100]"),
        (["data.labelled_pct=150"], "outside (0, 100]"),
        (["loss.variant=L+X"], "loss.variant"),
        (["loss.distance=manhattan"], "use 'squared' or 'euclidean'"),
        (["model.name=resnet"], None),
        (["train.steps=many"], "must be int"),
        (["train.lr=fast"], "must be a number"),
        (["oops"], "KEY=VALUE"),
    ],
)
def test_bad_values_are_user_errors(overrides, needle):
    if overrides == ["model.name=resnet"]:
        cfg = load_config(CONFIGS[0], overrides)
        with pytest.raises(UserError, match="model.name='resnet' is unknown"):
            build_model(cfg.model)
        return
    with pytest.raises(UserError) as e:
        load_config(CONFIGS[0], overrides)
    assert needle in str(e.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(bad)


def test_defaults_round_trip_and_build():
    cfg = Config()
    assert from_dict({}) == cfg and from_dict(to_dict(cfg)) == cfg
    assert build_model(cfg.model)(torch.zeros(1, 1, 60, 60)).landmarks.shape == (1, 5, 2)


def test_with_overrides_merges_nested_values_and_validates():
    cfg = load_config(CONFIGS[0])
    new = with_overrides(cfg, {"train": {"steps": 7}, "model": {"pointwise": [3]}})
    assert new.train.steps == 7 and new.model.pointwise == (3,) and new.train.lr == cfg.train.lr
    assert cfg.train.steps != 7  # the original is untouched (frozen)
    with pytest.raises(UserError, match="outside"):
        with_overrides(cfg, {"data": {"labelled_pct": 0}})
    with pytest.raises(UserError, match="unknown config key 'train.stepz'"):
        with_overrides(cfg, {"train": {"stepz": 1}})
