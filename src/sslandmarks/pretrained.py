"""Pretrained models shipped inside the package, loaded by name (``--model NAME``).

Each bundled model is ``weights/NAME.ckpt`` (weights + the full training config, no optimiser state;
loaded with ``weights_only=True`` like any checkpoint) beside its model card ``weights/NAME.md``
(data, protocol, measured metrics, input size, licence caveat). ``scripts/package_model.py`` writes both
from a finished run, so the card's figures are the run's own.
"""

from __future__ import annotations

from pathlib import Path

from sslandmarks.errors import UserError

WEIGHTS = Path(__file__).resolve().parent / "weights"

# name -> one line for `sslandmarks models`; a name is usable once weights/NAME.ckpt is bundled
PRETRAINED: dict[str, str] = {
    "face68": "68 face points (300-W / iBUG layout), the most accurate bundled face model",
    "face68-fast": "68 face points (300-W / iBUG layout), latency-first for CPUs (RCN+ at half resolution)",
    "mtfl5": "5 face points (eyes, nose, mouth corners) + gender, smile, glasses and pose",
    "hand21": "21 hand points (MediaPipe Hands layout, learnt from its machine-made points on HGR1); needs a box",
}


def available() -> list[str]:
    """Names whose weights ship with this installation."""
    return [name for name in PRETRAINED if (WEIGHTS / f"{name}.ckpt").is_file()]


def pretrained_path(name: str) -> Path:
    """The bundled checkpoint of ``name``; a one-line error names the usable ones otherwise."""
    have = ", ".join(available()) or "none"
    if name not in PRETRAINED:
        raise UserError(f"--model {name!r} is unknown: bundled models are {have} (`sslandmarks models` lists them)")
    path = WEIGHTS / f"{name}.ckpt"
    if not path.is_file():
        raise UserError(f"--model {name!r} is not bundled in this version yet: use one of {have}, "
                        "or --checkpoint with a model you trained")
    return path


def model_card(name: str) -> str:
    pretrained_path(name)
    card = WEIGHTS / f"{name}.md"
    return card.read_text() if card.is_file() else f"# {name}\n\n{PRETRAINED[name]}\n"


def checkpoint_path(name_or_path: str) -> str:
    """A checkpoint file as given, or a bundled model's by name (a file of that name wins)."""
    if Path(name_or_path).is_file() or name_or_path not in PRETRAINED:
        if not Path(name_or_path).is_file():
            raise UserError(f"checkpoint {name_or_path!r} does not exist, nor is it a bundled model's name "
                            f"({', '.join(available()) or 'none bundled'}; `sslandmarks models` lists them)")
        return name_or_path
    return str(pretrained_path(name_or_path))


def resolve(checkpoint: str | None, model: str | None) -> str:
    """``--checkpoint PATH`` or ``--model NAME`` (exactly one) -> the checkpoint file to load. A bundled model's
    name works with ``--checkpoint`` too (when no file of that name exists)."""
    if (checkpoint is None) == (model is None):
        raise UserError("give either --checkpoint PATH or --model NAME (see `sslandmarks models`)")
    if checkpoint is None:
        return str(pretrained_path(model))
    return checkpoint if Path(checkpoint).exists() or checkpoint not in PRETRAINED else str(pretrained_path(checkpoint))


UNINFORMATIVE = "| uninformative heads |"  # a model card's table row: heads whose answers carry no signal


def uninformative_heads(checkpoint: str | Path) -> tuple[str, ...]:
    """Attribute heads that the model card beside ``checkpoint`` (``NAME.md`` beside ``NAME.ckpt``) marks as
    uninformative, in its row ``| uninformative heads | gender, glasses (...) |``; none without a card."""
    card = Path(checkpoint).with_suffix(".md")
    if not card.is_file():
        return ()
    for line in card.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith(UNINFORMATIVE):
            names = line[len(UNINFORMATIVE):].split("|")[0].split("(")[0]
            return tuple(n.strip() for n in names.split(",") if n.strip())
    return ()
