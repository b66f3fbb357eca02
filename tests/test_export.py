"""ONNX export: ONNX Runtime agrees with PyTorch within 1e-3 px, the fused mirror with PyTorch's mirrored
answer, int8 with float32 within its stated limit (skipped without the onnx extra)."""

import pytest

from conftest import BLOCKS, sets, tiny_face_checkpoint, write_faces
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


def test_fused_mirror_graph_equals_pytorch_mirrored_inference(tmp_path):
    """One call of the fused graph = predict_all with test-time mirroring (flip, renumber, average), on random
    images of several batch sizes."""
    import onnxruntime as ort
    import torch

    from sslandmarks.checkpoint import model_from_checkpoint
    from sslandmarks.export import write_onnx
    from sslandmarks.inference import predict_all
    from sslandmarks.specs import SPECS

    model, cfg = model_from_checkpoint(tiny_face_checkpoint(tmp_path / "face.ckpt"))
    perm = SPECS["300w-68"].flip
    write_onnx(model, cfg, tmp_path / "mirror.onnx", perm)
    session = ort.InferenceSession(str(tmp_path / "mirror.onnx"))
    for n in (1, 3):
        images = torch.randint(0, 256, (n, 1, 32, 32), generator=torch.Generator().manual_seed(n), dtype=torch.uint8)
        got = session.run(None, {"images": (images.float() / 255).numpy()})[0]
        mirrored = predict_all(model, images, flip_perm=perm)[0].numpy()
        single = predict_all(model, images)[0].numpy()
        assert got.shape == (n, 68, 2) and abs(got - mirrored).max() < 1e-4
        assert abs(got - single).max() > 1e-3  # the mirror changes the answer: the test can tell them apart


def test_export_int8_and_mirror_through_the_cli(tmp_path, capsys):
    """--int8 (calibrated on the given faces) writes a quantised graph whose landmarks stay within the stated
    limit of float32 (INT8_LIMIT of the input width, on average); --mirror --int8 together; a model without a
    flip permutation refuses --mirror; --calibration without --int8 is a usage error."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch

    from sslandmarks.export import INT8_LIMIT

    ckpt = tiny_face_checkpoint(tmp_path / "face.ckpt")
    faces = write_faces(tmp_path / "faces", n=12)
    assert main(["export", "--checkpoint", str(ckpt), "--onnx", str(tmp_path / "f.onnx")]) == 0
    assert main(["export", "--checkpoint", str(ckpt), "--onnx", str(tmp_path / "q.onnx"), "--int8",
                 "--calibration", str(faces)]) == 0
    assert "int8 against float32" in capsys.readouterr().out
    ops = {n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    x = torch.rand(8, 1, 32, 32, generator=torch.Generator().manual_seed(3)).numpy()
    fp32 = ort.InferenceSession(str(tmp_path / "f.onnx")).run(None, {"images": x})[0]
    int8 = ort.InferenceSession(str(tmp_path / "q.onnx")).run(None, {"images": x})[0]
    assert np.linalg.norm(int8 - fp32, axis=-1).mean() <= INT8_LIMIT * 32
    assert main(["export", "--checkpoint", str(ckpt), "--onnx", str(tmp_path / "qm.onnx"), "--int8", "--mirror",
                 "--calibration", str(faces)]) == 0
    assert main(["export", "--checkpoint", str(ckpt), "--onnx", str(tmp_path / "x.onnx"), "--calibration",
                 str(faces)]) == 2
    assert "--calibration is for --int8" in capsys.readouterr().err


def test_int8_calibration_needs_training_faces(tmp_path, capsys):
    """Without training faces (the checkpoint's training data is not here, or --calibration names nothing)
    --int8 refuses in one line and writes nothing."""
    from dataclasses import replace

    from sslandmarks.checkpoint import model_from_checkpoint
    from sslandmarks.errors import UserError
    from sslandmarks.export import calibration_faces

    ckpt = tiny_face_checkpoint(tmp_path / "face.ckpt")
    _, cfg = model_from_checkpoint(ckpt)
    away = replace(cfg, data=replace(cfg.data, train_path=(str(tmp_path / "elsewhere"),)))
    with pytest.raises(UserError, match="give --calibration"):
        calibration_faces(away)
    assert main(["export", "--checkpoint", str(ckpt), "--onnx", str(tmp_path / "q.onnx"), "--int8",
                 "--calibration", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "q.onnx").exists()
