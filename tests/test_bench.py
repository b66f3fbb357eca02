"""The bench command's contract (speed itself is measured by `sslandmarks bench`, never asserted)."""

import json

import torch

from sslandmarks.bench import bench_model
from sslandmarks.cli import main


def test_bench_model_reports_every_figure():
    r = bench_model("blocks-S7", torch.device("cpu"), seconds=0.01, batch=(1, 1), infer_batch=2, warmup=1)
    for key in ("train_img_s", "ceiling_train_img_s", "infer_img_s", "tflops", "gflop_per_step"):
        assert r[key] > 0, key
    assert r["network_passes_per_step"] == 1 + 2 * 1  # ELT passes each unlabelled image twice


def test_bench_cli_json_and_bad_model(tmp_path, capsys, monkeypatch):
    import sslandmarks.bench as bench

    monkeypatch.setattr(bench, "matmul_peak_tflops", lambda device, seconds=1.0: 1.0)
    monkeypatch.setattr(bench, "bench_model", lambda m, d, s, batch=None, infer_batch=256: {
        "name": m, "train_img_s": 1.0, "ceiling_train_img_s": 2.0, "train_vs_ceiling": 0.5, "infer_img_s": 3.0,
        "tflops": 0.5})
    assert main(["bench", "--device", "cpu", "--models", "blocks-S7", "--out", str(tmp_path / "b.json")]) == 0
    res = json.loads((tmp_path / "b.json").read_text())
    assert {"device", "torch", "models"} <= set(res) and res["models"][0]["fraction_of_matmul_peak"] == 0.5
    assert main(["bench", "--models", "resnet"]) == 2
    assert "unknown" in capsys.readouterr().err


def test_time_to_target_reads_the_first_evaluation_under_the_target():
    from sslandmarks.time_to_accuracy import time_to_target

    curve = [(100, 10.0, 5.0), (200, 20.0, 2.5), (300, 30.0, 1.9), (400, 40.0, 2.1)]
    r = time_to_target(curve, 2.0)
    assert (r["steps_to_target"], r["seconds_to_target"], r["final"], r["best"]) == (300, 30.0, 2.1, 1.9)
    assert time_to_target(curve, 1.0)["seconds_to_target"] is None


def test_time_to_accuracy_trains_both_sides_and_reports_them(tmp_path, monkeypatch, capsys):
    """Both recipes of a (tiny) workload train in their own processes at once; the report holds each side's
    curve figures, read back from its own log.csv, and the speed-up when both reached the target."""
    import sslandmarks.time_to_accuracy as tta
    from conftest import TINY_OVERRIDES

    tiny = tta.Workload("blocks.yaml", (*TINY_OVERRIDES, "train.steps=10", "loss.variant=L"),
                        ("train.lr=0.001",), ("train.lr=0.003",), 1e9, "val_score", "px")
    monkeypatch.setattr(tta, "WORKLOADS", {"tiny": tiny})
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--time-to-accuracy", "--out", "t"]) == 0
    res = json.loads((tmp_path / "t" / "time_to_accuracy.json").read_text())
    entry = res["workloads"]["tiny"]
    for side, lr in (("baseline", 0.001), ("today", 0.003)):
        assert entry[side]["steps_to_target"] == 5 and entry[side]["steps"] == 10  # eval_every=5 in the tiny sets
        assert f"lr: {lr}" in (tmp_path / "t" / "tiny" / side / "config.yaml").read_text()
    assert entry["speedup"] > 0 and {"cpu", "isa", "cores", "torch", "threads_per_side"} <= set(res["machine"])
    assert "| tiny |" in (tmp_path / "t" / "time_to_accuracy.md").read_text()
    assert main(["bench", "--time-to-accuracy", "--out", "t"]) == 2  # never over an earlier run
    assert "exists" in capsys.readouterr().err


def test_network_passes_follow_where_elt_applies():
    from sslandmarks.bench import network_passes
    from sslandmarks.config import CONFIGS, load_config

    blocks = load_config(CONFIGS / "blocks.yaml")  # L+ELT+A, ELT on the unlabelled images
    assert network_passes(blocks, 16, 32) == 16 + 2 * 32
    faces = load_config(CONFIGS / "300w_fast.yaml")  # L+ELT on every image
    assert faces.loss.elt_on == "all" and network_passes(faces, 32, 32) == 2 * (32 + 32)
    assert network_passes(load_config(CONFIGS / "blocks.yaml", ["loss.variant=L+A"]), 16, 32) == 16 + 32


def test_bench_latency_end_to_end_on_a_tiny_checkpoint(tmp_path, monkeypatch, capsys):
    """--latency on a tiny face checkpoint with a few runs: every variant (PyTorch, ONNX Runtime levels, int8,
    the mirrored pair) timed at each thread count, NME on the given faces with int8's change against float32,
    the JSON and the table; dlib absent -> its row says so. No timing is asserted (speed belongs to benchmarks)."""
    import pytest

    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install 'sslandmarks[onnx]')")
    import sslandmarks.latency as latency
    from conftest import tiny_face_checkpoint, write_faces

    monkeypatch.setattr(latency, "dlib_predictor", lambda: "not installed (pip install dlib-bin ...)")
    ckpt = tiny_face_checkpoint(tmp_path / "face.ckpt")
    faces = write_faces(tmp_path / "faces", n=9)
    out = tmp_path / "lat.json"
    assert main(["bench", "--latency", "--models", str(ckpt), "--runs", "2", "--threads", "1", "2", "--data",
                 str(faces), "--calibration", str(faces), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    timed = {(r["variant"], r["threads"]) for r in res["rows"] if r["model"] == str(ckpt)}
    variants = {"torch", "torch-mirror", "ort", "ort-basic", "ort-none", "ort-preoptimised", "ort-nospin",
                "ort-int8-dynamic", "ort-int8", "ort-mirror-batch2", "ort-mirror-fused", "ort-int8-mirror-fused"}
    assert timed == {(v, t) for v in variants for t in (1, 2)}
    assert all(r["median_ms"] > 0 for r in res["rows"] if "median_ms" in r)
    acc = res["accuracy"][str(ckpt)]
    assert acc["ort-int8"]["reference"] == "ort" and acc["ort-int8-mirror-fused"]["reference"] == "ort-mirror-fused"
    assert abs(acc["ort"]["nme"] - acc["torch"]["nme"]) < 1e-3  # same model, same faces, same scoring
    assert abs(acc["ort-mirror-fused"]["nme"] - acc["torch-mirror"]["nme"]) < 1e-3
    assert abs(acc["ort-mirror-batch2"]["nme"] - acc["torch-mirror"]["nme"]) < 1e-3
    dlib_rows = [r for r in res["rows"] if r["model"] == "dlib"]
    assert len(dlib_rows) == 1 and "not installed" in dlib_rows[0]["error"]
    table = capsys.readouterr().out
    assert "ort-int8-mirror-fused" in table and "not installed" in table and res["ort_default_level"]


def test_dlib_missing_is_reported_not_raised(monkeypatch):
    """Without dlib (simulated: its import fails) the predictor is a reason, not an exception."""
    import sys

    from sslandmarks.latency import dlib_predictor

    monkeypatch.setitem(sys.modules, "dlib", None)  # `import dlib` raises ImportError
    reason = dlib_predictor()
    assert isinstance(reason, str) and reason.startswith("not installed")


def test_bench_latency_options_are_refused_elsewhere(capsys):
    assert main(["bench", "--runs", "5"]) == 2
    assert "--latency" in capsys.readouterr().err
    assert main(["bench", "--latency", "--time-to-accuracy"]) == 2
    assert main(["bench", "--time-to-accuracy", "--threads", "1", "2"]) == 2
