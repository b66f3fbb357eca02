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
