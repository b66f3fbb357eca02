"""Boxes for ``predict`` and the API: ``--box``, ``--boxes FILE.json`` and ``predict(image, boxes=...)`` crop
from the given boxes (one code path), a crop model without a detector (hands) takes the whole image without
them, a face model skips its detector for images with boxes, and every bad box is refused with exit 2 and one
line naming the problem. The models are built from configs without training (untrained weights still map each
crop back to image pixels exactly, which is what is tested here)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT
from sslandmarks.cli import main
from sslandmarks.errors import UserError

TINY = ["model.width=4", "model.depth=2", "model.kernel=3", "model.head_kernel=3", "model.mlp_hidden=[8]"]


def _build(path: Path, config: str, overrides: list[str]) -> Path:
    """A checkpoint of the model of ``config`` (tiny, untrained, seeded) as ``train`` writes one."""
    from sslandmarks.checkpoint import save_checkpoint
    from sslandmarks.config import load_config, to_dict
    from sslandmarks.models import build_model

    cfg = load_config(ROOT / "configs" / config, overrides)
    torch.manual_seed(0)
    save_checkpoint(path, {"model": build_model(cfg.model).state_dict(), "config": to_dict(cfg)})
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """``hand``: a hand-21 crop model (no detector), crop margin 0, so that its crop is exactly the square box
    and every landmark (a soft-argmax: a mean of pixel positions of the crop) lies inside that box; ``face``:
    a 300w-68 crop model (has a detector); ``blocks``: a whole-image model."""
    d = tmp_path_factory.mktemp("box-models")
    return {
        "hand": _build(d / "hand.ckpt", "hgr1.yaml", [*TINY, "data.crop_margin=0"]),
        "face": _build(d / "face.ckpt", "300w.yaml", ["model.width=4", "model.depth=1", "model.kernel=3"]),
        "blocks": _build(d / "blocks.ckpt", "blocks.yaml", ["model.width=4", "model.depth=2", "model.kernel=3",
                                                            "model.pointwise=[4]", "model.mlp_hidden=[8]"]),
    }


def _photo(path: Path, w: int = 160, h: int = 120, seed: int = 0) -> Path:
    """A textured RGB photo (random noise, smoothed a little) of ``w x h`` pixels."""
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def _predict(args: list[str], capsys) -> tuple[int, dict, str]:
    """``predict`` through the CLI's ``main``: (exit code, predictions.json or {}, stderr)."""
    out = Path(args[args.index("--out") + 1])
    code = main(["predict", *args])
    err = capsys.readouterr().err
    res = json.loads((out / "predictions.json").read_text()) if (out / "predictions.json").is_file() else {}
    return code, res, err


def _inside(landmarks, box) -> bool:
    lm = np.asarray(landmarks)
    return bool((lm[:, 0] >= box[0]).all() and (lm[:, 0] <= box[2]).all()
                and (lm[:, 1] >= box[1]).all() and (lm[:, 1] <= box[3]).all())


def test_box_gives_landmarks_inside_it_and_moves_with_the_image(models, tmp_path, capsys):
    """--box 100,20,140,60 (away from the image centre): the face has that box and its landmarks lie inside it;
    the same content shifted by (7, 5) px with the box shifted alike gives the landmarks shifted alike."""
    photo = _photo(tmp_path / "hand.png")
    code, res, err = _predict(["--checkpoint", str(models["hand"]), str(photo), "--box", "100,20,140,60",
                               "--out", str(tmp_path / "out")], capsys)
    assert code == 0 and "no detector" not in err, err
    (face,) = res[str(photo)]["faces"]
    assert face["box"] == [100, 20, 140, 60] and face["score"] is None and len(face["landmarks"]) == 21
    assert _inside(face["landmarks"], face["box"])
    assert (tmp_path / "out" / "hand_landmarks.png").is_file()
    big = np.zeros((140, 180, 3), np.uint8)
    big[5:125, 7:167] = np.asarray(Image.open(photo))
    Image.fromarray(big).save(tmp_path / "shifted.png")
    code, res2, _ = _predict(["--checkpoint", str(models["hand"]), str(tmp_path / "shifted.png"),
                              "--box", "107, 25, 147, 65", "--out", str(tmp_path / "out2")], capsys)
    (moved,) = res2[str(tmp_path / "shifted.png")]["faces"]
    assert code == 0 and np.allclose(np.array(moved["landmarks"]) - [7, 5], face["landmarks"], atol=0.05)


def test_the_api_takes_the_same_path(models, tmp_path, capsys):
    """``predict(image, boxes=[...])`` gives what --box gives; no boxes and no detector: the whole image."""
    import sslandmarks

    photo = _photo(tmp_path / "p.png")
    model = sslandmarks.load(models["hand"])
    assert model.needs_detector and not model.has_detector and model.refine == 0  # one pass: the box given
    (face,) = model.predict(photo, boxes=[(100, 20, 140, 60)])
    assert face.box == (100.0, 20.0, 140.0, 60.0) and _inside(face.landmarks, face.box)
    code, res, _ = _predict(["--checkpoint", str(models["hand"]), str(photo), "--box", "100,20,140,60",
                             "--out", str(tmp_path / "o")], capsys)
    assert code == 0 and np.allclose(res[str(photo)]["faces"][0]["landmarks"], face.landmarks, atol=1e-6)
    (whole,) = model.predict(photo)
    assert whole.box == (0.0, 0.0, 160.0, 120.0)
    assert np.allclose(whole.landmarks, model.predict(photo, boxes=[(0, 0, 160, 120)])[0].landmarks)
    two = model.predict(photo, boxes=[(0, 0, 40, 40), (100, 60, 160, 120)])
    assert [f.box for f in two] == [(0.0, 0.0, 40.0, 40.0), (100.0, 60.0, 160.0, 120.0)]
    assert all(_inside(f.landmarks, f.box) for f in two)
    assert model.predict(photo, boxes=[]) == []
    rows = np.array([[0, 0, 40, 40], [100, 60, 160, 120]], np.float32)  # a detector's (N, 4) array works too
    assert [f.box for f in model.predict(photo, boxes=rows)] == [f.box for f in two]
    for bad, needle in [([(1, 2, 3)], "give 4 numbers"), ([(10, 0, 5, 9)], "need x1 > x0"),
                        ([(0, 0, float("inf"), 9)], "finite"), ([(200, 0, 300, 50)], "entirely outside")]:
        with pytest.raises(UserError, match=needle):
            model.predict(photo, boxes=bad)


def test_no_box_and_no_detector_takes_the_whole_image_and_says_so_once(models, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    _photo(folder / "a.png", 160, 120)
    _photo(folder / "b.png", 90, 70, seed=1)
    code, res, err = _predict(["--checkpoint", str(models["hand"]), str(folder), "--out", str(tmp_path / "o")],
                              capsys)
    assert code == 0
    assert [res[str(folder / n)]["faces"][0]["box"] for n in ("a.png", "b.png")] == [[0, 0, 160, 120], [0, 0, 90, 70]]
    notes = [line for line in err.splitlines() if "no detector" in line]
    assert len(notes) == 1 and "whole image" in notes[0] and "2 input(s)" in notes[0], err


def test_boxes_file_for_a_folder(models, tmp_path, capsys):
    """Names by basename or by the path as given; several boxes per image; names matching no input: a warning."""
    folder = tmp_path / "in"
    folder.mkdir()
    a, b = _photo(folder / "a.png"), _photo(folder / "b.png", seed=1)
    table = {"a.png": [[10, 10, 50, 50]], str(b): [[0, 0, 60, 60], [90, 50, 150, 110]], "gone.png": [[0, 0, 9, 9]]}
    (tmp_path / "boxes.json").write_text(json.dumps(table))
    code, res, err = _predict(["--checkpoint", str(models["hand"]), str(folder),
                               "--boxes", str(tmp_path / "boxes.json"), "--out", str(tmp_path / "o")], capsys)
    assert code == 0
    assert [f["box"] for f in res[str(a)]["faces"]] == [[10, 10, 50, 50]]
    assert [f["box"] for f in res[str(b)]["faces"]] == [[0, 0, 60, 60], [90, 50, 150, 110]]
    assert all(_inside(f["landmarks"], f["box"]) for p in (a, b) for f in res[str(p)]["faces"])
    assert "1 name(s) match no input" in err and "gone.png" in err and "no detector" not in err, err


def test_face_model_with_a_box_runs_no_detector(models, tmp_path, capsys, monkeypatch):
    import sslandmarks.api

    def no_detector(*a, **k):
        raise AssertionError("the detector ran")

    monkeypatch.setattr(sslandmarks.api, "detect_faces", no_detector)
    photo = _photo(tmp_path / "face.png", 200, 200)
    code, res, err = _predict(["--checkpoint", str(models["face"]), str(photo), "--box", "50,40,150,140",
                               "--out", str(tmp_path / "o")], capsys)
    assert code == 0, err
    (face,) = res[str(photo)]["faces"]
    assert face["box"] == [50, 40, 150, 140] and len(face["landmarks"]) == 68
    assert main(["predict", "--checkpoint", str(models["face"]), str(photo), "--out", str(tmp_path / "o2")]) == 1
    assert "the detector ran" in capsys.readouterr().err  # without a box, it would have


def test_whole_image_model_sees_the_box_region(models, tmp_path, capsys):
    """A box on a whole-image model: its region resized, exactly as that region cut out as an image."""
    import sslandmarks

    photo = _photo(tmp_path / "p.png")
    model = sslandmarks.load(models["blocks"])
    (face,) = model.predict(photo, boxes=[(30, 20, 110, 100)])
    cut = np.asarray(Image.open(photo))[20:100, 30:110]
    (ref,) = model.predict(cut)
    assert face.box == (30.0, 20.0, 110.0, 100.0) and np.allclose(face.landmarks, ref.landmarks + [30, 20], atol=0.05)
    code, res, _ = _predict(["--checkpoint", str(models["blocks"]), str(photo), "--box", "30,20,110,100",
                             "--out", str(tmp_path / "o")], capsys)
    assert code == 0 and np.allclose(res[str(photo)]["faces"][0]["landmarks"], face.landmarks, atol=1e-6)


def test_box_on_a_video_starts_the_track(models, tmp_path, capsys):
    av = pytest.importorskip("av", reason="the video extra (PyAV) is not installed")
    from fractions import Fraction

    clip = tmp_path / "clip.mp4"
    rng = np.random.default_rng(0)
    with av.open(str(clip), "w") as out:
        stream = out.add_stream("mpeg4", rate=Fraction(25))
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for _ in range(4):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    code, res, err = _predict(["--checkpoint", str(models["hand"]), str(clip), "--box", "40,10,80,50", "--no-video",
                               "--out", str(tmp_path / "o")], capsys)
    assert code == 0, err
    frames = json.loads((tmp_path / "o" / "clip.json").read_text())["frames"]
    assert len(frames) == 4 and all(len(f["faces"]) == 1 for f in frames)
    assert frames[0]["faces"][0]["box"] == [40, 10, 80, 50] and frames[0]["faces"][0]["detected"]
    assert _inside(frames[0]["faces"][0]["landmarks"], (40, 10, 80, 50))
    code, _, err = _predict(["--checkpoint", str(models["hand"]), str(clip), "--box", "100,0,120,20",
                             "--out", str(tmp_path / "o2")], capsys)
    assert code == 2 and "entirely outside" in err and str(clip) in err and len(err.strip().splitlines()) == 1


BAD = [
    (["--box", "1,2,3"], "--box '1,2,3': give 4 comma-separated numbers"),
    (["--box", "a,b,c,d"], "--box 'a,b,c,d': give 4 comma-separated numbers"),
    (["--box", "50,10,40,60"], "--box '50,10,40,60': need x1 > x0"),
    (["--box", "10,60,40,60"], "need x1 > x0 and y1 > y0"),
    (["--box", "nan,10,40,60"], "finite"),
    (["--box", "10,10,inf,60"], "finite"),
    (["--box=-50,-40,-10,-1"], "lies entirely outside {img} (160x120 pixels)"),
    (["--box", "-5,0,90,80"], "argument --box: expected one argument; a box whose first value is negative is "
                              "written --box=-5,0,90,80"),
    (["--box", "160,0,200,50"], "lies entirely outside {img}"),
    (["--box", "1,2,3,4", "--boxes", "{tmp}/b.json"], "not allowed with argument --box"),
    (["--boxes", "{tmp}/missing.json"], "--boxes {tmp}/missing.json: cannot read it"),
    (["--boxes", "{tmp}/text.json"], "not valid JSON"),
    (["--boxes", "{tmp}/list.json"], "give a JSON object"),
    (["--boxes", "{tmp}/flat.json"], "'img.png' holds [1, 2, 3, 4]: give a list of boxes"),
    (["--boxes", "{tmp}/three.json"], "'img.png': box 1 [1, 2, 3]: give 4 numbers"),
    (["--boxes", "{tmp}/strings.json"], "give 4 numbers"),
    (["--boxes", "{tmp}/twice.json"], "'img.png' is given twice"),
    (["--boxes", "{tmp}/outside.json"], "box [500, 0, 600, 50] lies entirely outside {img}"),
    (["--boxes", "{tmp}/nan.json"], "finite"),
]
FILES = {"b.json": "{}", "text.json": "{'img.png': [[1, 2, 3, 4]]}", "list.json": "[[1, 2, 3, 4]]",
         "flat.json": '{"img.png": [1, 2, 3, 4]}', "three.json": '{"img.png": [[1, 2, 3]]}',
         "strings.json": '{"img.png": [["1", "2", "3", "4"]]}',
         "twice.json": '{"img.png": [[1, 2, 3, 4]], "img.png": [[1, 2, 3, 4]]}',
         "outside.json": '{"img.png": [[0, 0, 10, 10], [500, 0, 600, 50]]}',
         "nan.json": '{"img.png": [[NaN, 0, 5, 5]]}'}


@pytest.mark.parametrize("extra, needle", BAD, ids=[f"{i}-{n.split(':')[0][:20]}" for i, (_, n) in enumerate(BAD)])
def test_bad_boxes_exit_2_with_one_line(models, tmp_path, capsys, extra, needle):
    img = _photo(tmp_path / "img.png")
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    args = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    code = main(["predict", "--checkpoint", str(models["hand"]), str(img), *args, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert needle.replace("{tmp}", str(tmp_path)).replace("{img}", str(img)) in lines[0], lines[0]
    assert not (tmp_path / "o").exists()  # refused before anything is written


def test_a_basename_shared_by_two_inputs_is_refused(models, tmp_path, capsys):
    for d in ("x", "y"):
        (tmp_path / d).mkdir()
        _photo(tmp_path / d / "p.png")
    (tmp_path / "b.json").write_text('{"p.png": [[0, 0, 10, 10]]}')
    code = main(["predict", "--checkpoint", str(models["hand"]), str(tmp_path / "x"), str(tmp_path / "y"),
                 "--boxes", str(tmp_path / "b.json"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "'p.png' names 2 inputs" in err and "by their paths" in err
    (tmp_path / "b.json").write_text(json.dumps({str(tmp_path / "x" / "p.png"): [[0, 0, 10, 10]],
                                                 str(tmp_path / "y" / "p.png"): [[5, 5, 40, 40]]}))
    code, res, _ = _predict(["--checkpoint", str(models["hand"]), str(tmp_path / "x"), str(tmp_path / "y"),
                             "--boxes", str(tmp_path / "b.json"), "--out", str(tmp_path / "o")], capsys)
    assert code == 0 and [res[str(tmp_path / d / "p.png")]["faces"][0]["box"] for d in "xy"] == [[0, 0, 10, 10],
                                                                                                 [5, 5, 40, 40]]


def test_an_empty_list_means_no_object(models, tmp_path, capsys):
    img = _photo(tmp_path / "img.png")
    (tmp_path / "b.json").write_text('{"img.png": []}')
    code, res, err = _predict(["--checkpoint", str(models["hand"]), str(img), "--boxes", str(tmp_path / "b.json"),
                               "--out", str(tmp_path / "o")], capsys)
    assert code == 0 and res[str(img)]["faces"] == [] and "no detector" not in err


def test_hand21_is_registered_and_refused_by_name_until_bundled(capsys):
    from sslandmarks import pretrained

    assert main(["models"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("hand21"))
    assert "needs a box" in line and ("bundled" if "hand21" in pretrained.available() else "not yet") in line
    if "hand21" not in pretrained.available():
        assert main(["predict", "--model", "hand21", "x.png", "--box", "1,2,3,4", "--out", "o"]) == 2
        err = capsys.readouterr().err
        assert "'hand21' is not bundled in this version yet" in err and len(err.strip().splitlines()) == 1


def test_boxes_are_checked_against_the_image_as_displayed(models, tmp_path, capsys):
    """A photo stored 40x64 with EXIF orientation 6 is shown 64x40: a box at x 50..60 lies inside it."""
    exif = Image.Exif()
    exif[274] = 6
    Image.fromarray(np.zeros((64, 40, 3), np.uint8)).save(tmp_path / "r.jpg", exif=exif)
    code, res, err = _predict(["--checkpoint", str(models["hand"]), str(tmp_path / "r.jpg"), "--box", "50,0,60,10",
                               "--out", str(tmp_path / "o")], capsys)
    assert code == 0 and res[str(tmp_path / "r.jpg")]["size"] == [64, 40], err
    code, _, err = _predict(["--checkpoint", str(models["hand"]), str(tmp_path / "r.jpg"), "--box", "0,45,10,50",
                             "--out", str(tmp_path / "o2")], capsys)
    assert code == 2 and "lies entirely outside" in err and "(64x40 pixels)" in err
