"""Experiment configuration: frozen dataclasses, a YAML loader, and ``--set a.b=c`` overrides.

Unknown keys are rejected with the list of valid ones; every error is a :class:`UserError`.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sslandmarks.errors import UserError
from sslandmarks.specs import POINT_MAPS, SPECS

PRECISIONS = ("32-true", "bf16-mixed", "64-true", "auto")
CONV_MODES = ("auto", "direct", "fft")  # how large-kernel convolutions train (sslandmarks.fftconv)
VARIANTS = ("L", "L+A", "L+ELT", "L+ELT+A", "A", "A+ELT")
CONFIGS = Path(__file__).resolve().parent / "configs"  # shipped with the package; ./configs links here


@dataclass(frozen=True)
class HeadConfig:
    """A named attribute head on the landmark coordinates: ``class`` (``classes`` logits) or
    ``regression`` (``dims`` outputs, L1 loss)."""

    name: str = "class"
    kind: str = "class"
    classes: int = 2
    dims: int = 1
    labels: tuple[str, ...] = ()  # class names in index order, for data that names its classes


@dataclass(frozen=True)
class SourceConfig:
    """More training faces, in their own landmark layout, mixed into every step (``data.extra_sources``).

    ``format`` and ``train_path`` as ``data.format``/``data.train_path``; ``spec`` is the layout of its
    annotations: the main ``data.spec``, or one the model's points determine (``specs.POINT_MAPS``: MTFL's
    5 points are means of 300-W points), which is then supervised through that fixed linear map of the
    predicted points. ``batch`` of its faces join every step (global, like ``train.batch_labelled``);
    ``weight`` is the landmark-loss weight of each of its points against a point of the main data;
    ``labelled: false`` keeps only its images (for ELT) and attributes; ``attributes`` are the model heads
    it labels (other heads take its faces as unlabelled)."""

    format: str = ""
    train_path: tuple[str, ...] = ()
    spec: str = ""
    batch: int = 0
    weight: float = 1.0
    labelled: bool = True
    attributes: tuple[str, ...] = ()


@dataclass(frozen=True)
class BoxJitter:
    """Training crops re-cut from a box moved by ``N(0, shift)`` of the landmark box side per axis ``(x, y)``
    and scaled by ``exp(N(0, scale))``: the scatter of a face detector's boxes around the landmark box
    (measured for dlib's by scripts/calibrate_dlib_box.py). Zeros: off."""

    shift: tuple[float, float] = (0.0, 0.0)
    scale: float = 0.0


@dataclass(frozen=True)
class DataConfig:
    name: str = "blocks"  # blocks | shapes
    n_train: int = 3200
    n_val: int = 3200
    n_test: int = 3200
    seed: int = 0  # generation seed: the same images for every run
    labelled_pct: float = 100.0  # share of training images that keep their landmarks
    # annotated files (name: files): format pts | mtfl | csv, paths to a folder / list / manifest
    format: str = ""
    train_path: tuple[str, ...] = ()  # one or more folders / lists / manifests
    val_path: tuple[str, ...] = ()  # empty: a val_fraction of the training files (by seed) is held out
    test_path: tuple[str, ...] = ()
    val_fraction: float = 0.1
    # optional split by a column's value (e.g. subject): keep only the listed values in each split
    split_column: str = ""
    train_values: tuple[str, ...] = ()
    val_values: tuple[str, ...] = ()
    test_values: tuple[str, ...] = ()
    crop_margin: float = 0.25  # crop = landmark box enlarged by this share of its side on each side
    spec: str = ""  # landmark layout (specs.SPECS: 300w-68, mtfl-5, aflw-19, hgr1-25, hand-21); empty = generic
    normalizer: str = ""  # NME normaliser; empty = the spec's or dataset's default
    # augmentation of training batches, fresh each step: rotation (deg), log-uniform scale, shift (share of size)
    augment_rotation_deg: float = 0.0
    augment_scale: tuple[float, float] = (1.0, 1.0)
    augment_translate: float = 0.0
    augment_flip: float = 0.0  # probability of a horizontal mirror (needs data.spec with a flip permutation)
    test_flip: bool = False  # evaluate/predict average each image's landmarks with its mirror image's
    box_jitter: BoxJitter = field(default_factory=BoxJitter)  # crops as a face detector's boxes scatter
    extra_sources: tuple[SourceConfig, ...] = ()  # more training faces (data.name: files), mixed into each step


@dataclass(frozen=True)
class ModelConfig:
    """Seq-MT per Tables S7-S9: ``depth`` convs of ``kernel x kernel x width``, then 1x1 convs of
    ``pointwise`` widths, then a ``head_kernel`` conv to ``num_landmarks`` maps, soft-argmax (``beta``),
    and one MLP (``mlp_hidden``, ``dropout``) per attribute head."""

    name: str = "seqmt"
    in_channels: int = 1
    input_size: tuple[int, int] = (60, 60)
    num_landmarks: int = 5
    kernel: int = 9
    width: int = 8
    depth: int = 6
    pointwise: tuple[int, ...] = (8,)
    head_kernel: int = 1
    batchnorm: bool = False
    beta: float = 1.0
    levels: int = 4  # RCN: 2x2 poolings from the input to the coarsest map
    stem_stride: int = 1  # RCN: a first conv of this stride; the heatmaps are 1/stem_stride of the input
    mlp_hidden: tuple[int, ...] = (256, 256)
    dropout: float = 0.25
    heads: tuple[HeadConfig, ...] = (HeadConfig(name="class", kind="class", classes=15),)


@dataclass(frozen=True)
class LossConfig:
    """Eq. 2 weights; ``variant`` picks the terms (L = landmarks, A = attributes, ELT)."""

    variant: str = "L+ELT+A"
    lam: float = 1.0
    alpha: float = 1.0
    gamma: float = 0.0
    attribute: float = 1.0
    elt_on: str = "unlabelled"  # unlabelled (the paper's protocol) | all
    # how a landmark's miss is charged: squared distance (the paper's) | euclidean (the distance itself, which
    # is what NME averages: outliers pull less, small misses more; smoothed within 0.1 px of zero)
    distance: str = "squared"
    elt_rotation_deg: float = 30.0
    elt_scale: tuple[float, float] = (0.9, 1.1)
    elt_translate: float = 3.0


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000
    batch_labelled: int = 16
    batch_unlabelled: int = 32
    lr: float = 1e-3
    schedule: str = "cosine"  # constant | cosine
    warmup_steps: int = 0
    eval_every: int = 250
    log_every: int = 25
    checkpoint_every: int = 250
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    # 32-true | bf16-mixed | 64-true (float64, for checks of the arithmetic) | auto: bf16-mixed where the
    # hardware multiplies bfloat16 natively (a CPU with AMX-BF16, a CUDA GPU with bf16), else 32-true
    precision: str = "32-true"
    channels_last: bool = True
    # how stride-1 convolutions with kernels of 5 or more train in float32: directly, through the FFT (the same
    # function, another algorithm), or auto: on a CPU, whichever made a training pass of random images faster
    # when the run started (a few seconds; networks under 1 GFLOP a pass and runs under 200 steps stay direct
    # untimed); evaluation and export always convolve directly
    conv: str = "auto"
    # decay of an exponential moving average of the weights and BatchNorm statistics (0 = off); when on, the
    # average is what validation scores and what best.ckpt, the checkpoints' "model" and the final model hold.
    # Its decay warms up as min(ema, (1 + n) / (10 + n)) after n updates, so early validations are not stuck
    # near the random start
    ema: float = 0.0
    # start from these weights (a checkpoint path or a bundled model name) with a fresh optimiser and
    # schedule: fine-tuning; tensors whose name or shape differ (e.g. another landmark count) start fresh
    init: str = ""


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        validate(self)


def validate(cfg: Config) -> None:
    """Check values that types cannot express."""
    if not 0.0 < cfg.data.labelled_pct <= 100.0:
        raise UserError(f"data.labelled_pct={cfg.data.labelled_pct} is outside (0, 100]: give a percentage")
    if cfg.loss.variant not in VARIANTS:
        raise UserError(f"loss.variant={cfg.loss.variant!r} is unknown: use one of {', '.join(VARIANTS)}")
    if not 0.0 <= cfg.data.augment_flip <= 1.0:
        raise UserError(f"data.augment_flip={cfg.data.augment_flip} is a probability: give a value in [0, 1]")
    if cfg.loss.elt_on not in ("unlabelled", "all"):
        raise UserError(f"loss.elt_on={cfg.loss.elt_on!r}: use 'unlabelled' or 'all'")
    if cfg.loss.distance not in ("squared", "euclidean"):
        raise UserError(f"loss.distance={cfg.loss.distance!r}: use 'squared' or 'euclidean'")
    if cfg.train.schedule not in ("constant", "cosine"):
        raise UserError(f"train.schedule={cfg.train.schedule!r}: use 'constant' or 'cosine'")
    if cfg.train.precision not in PRECISIONS:
        raise UserError(f"train.precision={cfg.train.precision!r}: use one of {', '.join(PRECISIONS)}")
    if cfg.train.conv not in CONV_MODES:
        raise UserError(f"train.conv={cfg.train.conv!r}: use one of {', '.join(CONV_MODES)}")
    for name in ("steps", "batch_labelled", "eval_every", "log_every", "checkpoint_every"):
        if getattr(cfg.train, name) < 1:
            raise UserError(f"train.{name} must be >= 1")
    if not cfg.train.lr > 0:
        raise UserError(f"train.lr={cfg.train.lr} must be greater than 0")
    if not 0.0 <= cfg.train.ema < 1.0:
        raise UserError(f"train.ema={cfg.train.ema} is a decay per step: give a value in [0, 1), e.g. 0.999 (0 = off)")
    if cfg.train.ema > 0 and cfg.train.precision == "64-true":
        raise UserError("train.ema with train.precision=64-true is not supported (float64 is for checks of the "
                        "arithmetic): set train.ema=0")
    for section, name in (("train", "batch_unlabelled"), ("train", "warmup_steps"), ("loss", "lam"),
                          ("loss", "alpha"), ("loss", "gamma"), ("loss", "attribute")):
        if getattr(getattr(cfg, section), name) < 0:
            raise UserError(f"{section}.{name}={getattr(getattr(cfg, section), name)} must be >= 0")
    _check_unlabelled(cfg)
    _check_sources(cfg)
    jitter = cfg.data.box_jitter
    if min(*jitter.shift, jitter.scale) < 0:
        raise UserError(f"data.box_jitter: shift {list(jitter.shift)} and scale {jitter.scale} are standard "
                        "deviations: give values >= 0")
    for head in cfg.model.heads:
        if head.kind not in ("class", "regression"):
            raise UserError(f"model.heads: head {head.name!r} has kind {head.kind!r}: use 'class' or 'regression'")
        if head.labels and len(head.labels) != head.classes:
            raise UserError(f"model.heads: head {head.name!r} has {len(head.labels)} labels for {head.classes} classes")


def _check_unlabelled(cfg: Config) -> None:
    """A variant that learns from images without landmarks (``A`` or ``A+ELT``: every image; ELT on the
    ``unlabelled`` ones) needs some of them in every batch."""
    terms, loss = variant_terms(cfg.loss.variant), cfg.loss
    elt_unlabelled = "ELT" in terms and loss.alpha > 0 and loss.elt_on == "unlabelled"
    if ("L" not in terms or elt_unlabelled) and cfg.train.batch_unlabelled < 1:
        raise UserError(f"train.batch_unlabelled=0, but loss.variant={loss.variant} learns from images without "
                        "landmarks: give train.batch_unlabelled >= 1")


def _check_sources(cfg: Config) -> None:
    """Each of ``data.extra_sources`` reads files, in a layout the model's points determine, labels only
    heads the model has, and adds faces to every step."""
    d, heads = cfg.data, {h.name for h in cfg.model.heads}
    if d.extra_sources and d.name != "files":
        raise UserError(f"data.extra_sources need data.name=files (annotated faces), not {d.name!r}")
    for i, s in enumerate(d.extra_sources):
        key = f"data.extra_sources[{i}]"
        if not s.format or not s.train_path:
            raise UserError(f"{key} needs a format (pts, mtfl, csv, ljson, coco) and a train_path")
        if s.spec and s.spec not in SPECS:
            raise UserError(f"{key}.spec={s.spec!r} is unknown: use one of {', '.join(SPECS)}")
        if (s.spec or d.spec) != d.spec and (d.spec, s.spec) not in POINT_MAPS:  # no spec: data.spec's layout
            known = ", ".join(f"{a} -> {b}" for a, b in POINT_MAPS)
            raise UserError(f"{key}.spec={s.spec!r}: data.spec={d.spec!r} does not determine its points (known "
                            f"maps: {known}); use data.spec's layout")
        if s.batch < 1:
            raise UserError(f"{key}.batch={s.batch}: give the number of its faces in every step (>= 1)")
        if s.weight < 0:
            raise UserError(f"{key}.weight={s.weight} must be >= 0")
        unknown = [a for a in s.attributes if a not in heads]
        if unknown:
            raise UserError(f"{key}.attributes: {unknown[0]!r} is not a model head (model.heads: "
                            f"{', '.join(sorted(heads)) or 'none'})")


def variant_terms(variant: str) -> frozenset[str]:
    """``"L+ELT+A" -> {"L", "ELT", "A"}``."""
    return frozenset(variant.split("+"))


def _convert(tp: Any, value: Any, path: str) -> Any:
    """Build a value of annotated type ``tp`` from plain YAML data."""
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"config key {path!r} must be a mapping, got {value!r}")
        return _build(tp, value, path)
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        if args[0] is str and isinstance(value, str):  # a single path where a list is expected
            value = [value]
        if not isinstance(value, list | tuple):
            raise UserError(f"config key {path!r} must be a list, got {value!r}")
        inner = args[0]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(inner, v, f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise UserError(f"config key {path!r} needs {len(args)} values, got {value!r}")
        return tuple(_convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if tp is float and isinstance(value, int | str) and not isinstance(value, bool):
        try:  # YAML 1.1 reads 1e-3 (no dot) as a string
            value = float(value)
        except (ValueError, OverflowError):
            pass
    if tp is bool and not isinstance(value, bool):
        raise UserError(f"config key {path!r} must be true or false, got {value!r}")
    if tp in (int, str) and (not isinstance(value, tp) or isinstance(value, bool)):
        raise UserError(f"config key {path!r} must be {tp.__name__}, got {value!r}")
    if tp is float and not isinstance(value, float):
        raise UserError(f"config key {path!r} must be a number, got {value!r}")
    if tp is float and not math.isfinite(value):
        raise UserError(f"config key {path!r} must be a finite number, got {value!r}")
    return value


def _build(cls: type, data: dict, path: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{path}.{key}" if path else str(key)
        if key not in names:
            raise UserError(f"unknown config key {full!r}: valid keys here are {', '.join(names)}")
        kwargs[key] = _convert(hints[key], value, full)
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict:
    """Plain nested dict (tuples become lists) suitable for YAML and checkpoints."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def _set_path(data: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise UserError(f"--set {dotted}: {k!r} is not a section")
    node[keys[-1]] = value


def parse_overrides(items: list[str] | None) -> dict:
    """``["train.steps=100", "loss.variant=L"]`` -> nested dict (values parsed as YAML)."""
    out: dict = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.steps=500")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise UserError(f"--set {item!r}: the value is not valid YAML ({str(e).splitlines()[0]}); quote "
                            "strings, close brackets: --set 'model.pointwise=[8, 8]'") from None
        if key.strip() == "variant":  # convenience alias
            key = "loss.variant"
        _set_path(out, key.strip(), value)
    return out


def merge(base: dict, extra: dict) -> dict:
    """Recursive dict merge; ``extra`` wins."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def from_dict(data: dict, overrides: dict | None = None) -> Config:
    return _build(Config, merge(data or {}, overrides or {}))


def with_overrides(cfg: Config, overrides: dict) -> Config:
    """``cfg`` with the nested ``overrides`` applied, e.g. ``{"train": {"steps": 30}}`` (validated like a file)."""
    return from_dict(to_dict(cfg), overrides)


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config file and apply ``--set`` overrides. A bare name that is no file here (``blocks.yaml``
    or ``blocks``) is the config of that name shipped in the package, so names work outside a checkout."""
    p = Path(path)
    if not p.is_file() and p.parent == Path("."):
        shipped = CONFIGS / (p.name if p.suffix in (".yaml", ".yml") else f"{p.name}.yaml")
        p = shipped if shipped.is_file() else p
    if not p.is_file():
        names = ", ".join(sorted(f.name for f in CONFIGS.glob("*.yaml")))
        raise UserError(f"config file {str(path)!r} does not exist: pass a YAML file, or a packaged config by "
                        f"name ({names})")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    except UnicodeDecodeError:
        raise UserError(f"{p}: not a text file (not UTF-8): pass a YAML config, e.g. configs/blocks.yaml") from None
    except OSError as e:
        raise UserError(f"{p}: cannot read ({e.strerror})") from None
    if not isinstance(data, dict):
        raise UserError(f"{p}: the top level must be a mapping with data/model/loss/train sections")
    try:
        return from_dict(data, parse_overrides(overrides))
    except UserError as e:
        raise UserError(f"{p}: {e}") from None


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def config_diff(a: Config, b: Config) -> list[str]:
    """Dotted keys whose values differ between two resolved configs, e.g. ``["train.lr (0.001 -> 0.003)"]``."""

    def flat(d: dict, prefix: str = "") -> dict:
        out: dict = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    fa, fb = flat(to_dict(a)), flat(to_dict(b))
    return [f"{k} ({fa.get(k)!r} -> {fb.get(k)!r})" for k in sorted(fa.keys() | fb.keys()) if fa.get(k) != fb.get(k)]


def read_saved_config(path: str | Path) -> Config:
    """The resolved config a run folder's ``config.yaml`` recorded (keys added since take their defaults)."""
    return from_dict(yaml.safe_load(Path(path).read_text()) or {})
