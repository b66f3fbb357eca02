"""ONNX export: ONNX Runtime agrees with PyTorch within 1e-3 px (skipped without the onnx extra)."""

import pytest

from conftest import BLOCKS, sets
from sslandmarks.cli import main

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install 'sslandmarks[onnx]')")


@pytest.mark.filterwarnings("ignore")
def test_export_parity_on_cpu(tmp_path, tiny_overrides, capsys):
    import numpy as np
    import onnxruntime as ort
    import torch

    from sslandmarks.checkpoint import model_from_checkpoint

    run = tmp_path / "run"
    assert main(["train", "--config", BLOCKS, "--out", str(run), "--quiet",
                 *sets(tiny_overrides + ["train.steps=10"])]) == 0
    ckpt = run / "checkpoints" / "best.ckpt"
    assert main(["export", "--checkpoint", str(ckpt), "--onnx", str(tmp_path / "m.onnx")]) == 0
    assert "max landmark difference" in capsys.readouterr().out
    # independent check on other images and another batch size
    model, _ = model_from_checkpoint(ckpt)
    x = torch.rand(7, 1, 60, 60)
    landmarks, logits = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"images": x.numpy()})
    with torch.no_grad():
        ref = model(x)
    assert np.abs(landmarks - ref.landmarks.numpy()).max() < 1e-3
    assert np.abs(logits - ref.attributes["class"].numpy()).max() < 1e-3
