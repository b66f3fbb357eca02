"""PNG figures (matplotlib, Agg backend): predictions vs ground truth, the Blocks classes, Fig. 3, CED curves,
table plots. Every function draws arrays it is given; none runs a model or reads a dataset."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

COLORS = ["red", "dodgerblue", "gold", "magenta", "cyan", "orange", "lime"]
COLORS_RGB = [(255, 0, 0), (30, 144, 255), (255, 215, 0), (255, 0, 255), (0, 255, 255), (255, 165, 0), (0, 255, 0)]


def _show(ax, image: torch.Tensor) -> None:
    img = image.float().cpu()
    img = img[0] if img.shape[0] == 1 else img.permute(1, 2, 0) / 255.0
    ax.imshow(img.numpy(), cmap="gray", vmin=0, vmax=255)
    ax.set_xticks([])
    ax.set_yticks([])


def prediction_grid(images, gt, preds: dict[str, torch.Tensor], path: str | Path, cols: int = 4,
                    gt_label: str = "ground truth") -> None:
    """Images with ground truth (green +, named ``gt_label`` in the legend) and one or more predictions (x, one
    colour per name)."""
    n = images.shape[0]
    gt = None if gt is None else gt.float().cpu().numpy()
    preds = {k: v.float().cpu().numpy() for k, v in preds.items()}
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.4 * rows + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        _show(ax, images[i])
        if gt is not None:
            ax.plot(gt[i, :, 0], gt[i, :, 1], "+", color="lime", ms=8, mew=1.5)
        for j, (name, p) in enumerate(preds.items()):
            ax.plot(p[i, :, 0], p[i, :, 1], "x", color=COLORS[j % len(COLORS)], ms=6, mew=1.5, label=name)
    handles = [plt.Line2D([], [], ls="", marker="+", color="lime", label=gt_label)] if gt is not None else []
    handles += [plt.Line2D([], [], ls="", marker="x", color=COLORS[j % len(COLORS)], label=k)
                for j, k in enumerate(preds)]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def draw_faces(rgb: np.ndarray, faces: list[dict], boxes: bool = True, max_width: int = 1000) -> np.ndarray:
    """``rgb (H, W, 3)`` uint8, shrunk to at most ``max_width`` px wide, with each face's landmarks (dots), its
    box and its number and attributes above the box. ``faces``: ``{"box": [x0, y0, x1, y1], "landmarks":
    [[x, y], ...], "attributes": {...}}`` in image pixels. Pillow draws it (a few ms, also per video frame)."""
    from PIL import Image, ImageDraw

    h, w = rgb.shape[:2]
    scale = min(1.0, max_width / w)
    im = Image.fromarray(rgb)
    if scale < 1.0:
        im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR,
                       reducing_gap=2.0)
        scale = im.size[0] / w
    draw = ImageDraw.Draw(im)
    for i, face in enumerate(faces):
        color = COLORS_RGB[i % len(COLORS_RGB)]
        x0, y0, x1, y1 = (float(v) * scale for v in face["box"])
        r = max(1.0, min(4.0, (x1 - x0) / 60))
        # pixel centres map to pixel centres: x' = (x + 0.5) * scale - 0.5
        for x, y in (np.asarray(face["landmarks"], dtype=np.float64) + 0.5) * scale - 0.5:
            if np.isfinite(x) and np.isfinite(y):
                draw.ellipse((x - r, y - r, x + r, y + r), fill=color, outline=(0, 0, 0))
        if boxes:
            draw.rectangle((x0, y0, x1, y1), outline=color, width=max(1, round(r / 2)))
        text = ", ".join(str(v) for v in face.get("attributes", {}).values() if isinstance(v, str | int))
        label = f"{i + 1}" + (f": {text}" if text else "")
        left, top, right, bottom = draw.textbbox((x0, y0), label)
        ty = max(0.0, y0 - (bottom - top) - 4)
        draw.rectangle((x0, ty, x0 + right - left + 4, ty + bottom - top + 4), fill=(0, 0, 0))
        draw.text((x0 + 2, ty + 2 - (top - y0)), label, fill=color)
    return np.asarray(im)


def photo_overlay(rgb, faces: list[dict], path: str | Path, boxes: bool = True) -> None:
    """:func:`draw_faces` saved as a PNG (fast compression: the overlay is for looking at)."""
    from PIL import Image

    Image.fromarray(draw_faces(rgb, faces, boxes)).save(path, compress_level=1)


def block_classes(canvases: np.ndarray, landmarks: np.ndarray, path: str | Path) -> None:
    """The 15 base figures of Blocks (``canvases (15, H, W)``) with their 5 landmarks ``(15, 5, 2)`` numbered
    from the head (:func:`~sslandmarks.data.synthetic.block_figure_canvases` draws them)."""
    fig, axes = plt.subplots(3, 5, figsize=(11, 7))
    for c, ax in enumerate(axes.flat):
        ax.imshow(canvases[c], cmap="gray")
        for k, (x, y) in enumerate(landmarks[c]):
            ax.text(x, y, str(k + 1), color="red", ha="center", va="center", fontsize=8, weight="bold")
        ax.set_title(f"class {c}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Blocks: the 15 base figures (landmarks 1-5 from the head)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def shapes_figure(images: torch.Tensor, landmarks: torch.Tensor, probs: torch.Tensor, path: str | Path) -> None:
    """Fig. 3, one column per image: the image; its predicted landmarks 1 (red) and 2 (blue); the two landmark
    probability maps. ``images (n, C, H, W)`` uint8, ``landmarks (n, 2, 2)``, ``probs (n, 2, h, w)``."""
    n, lms, probs = images.shape[0], landmarks.numpy(), probs.numpy()
    fig, axes = plt.subplots(4, n, figsize=(1.8 * n, 7.6), squeeze=False)
    for i in range(n):
        _show(axes[0, i], images[i])
        _show(axes[1, i], images[i])
        for k, color in enumerate(("red", "dodgerblue")):
            axes[1, i].plot(lms[i, k, 0], lms[i, k, 1], "x", color=color, ms=9, mew=2)
            axes[2 + k, i].imshow(probs[i, k], cmap="magma")
            axes[2 + k, i].set_xticks([])
            axes[2 + k, i].set_yticks([])
    for r, label in enumerate(["image", "landmarks", "map 1", "map 2"]):
        axes[r, 0].set_ylabel(label)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def ced_plot(curves: dict[str, list[float]], normalizer: str, path: str | Path, limit: float = 10.0) -> None:
    """Cumulative error distribution: share of images with NME (percent) at most x, one line per name."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, nme in curves.items():
        x = np.sort(np.asarray([v for v in nme if v == v], dtype=float))
        ax.step(x, np.arange(1, len(x) + 1) / max(len(x), 1), where="post", label=name)
    for t in (8.0, 10.0):
        ax.axvline(t, color="grey", lw=0.7, ls=":")
    ax.set_xlim(0, limit)
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"NME (% of {normalizer})")
    ax.set_ylabel("share of images")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table_plot(results: list[dict], table, path: str | Path) -> None:
    """Metric vs labelled fraction (log x): ours solid with std bars, the paper's dashed in the same colour."""
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for j, row in enumerate(table.rows):
        color = plt.cm.tab10(j % 10)
        rs = [r for r in results if r["model"] == row.name and r["seeds"] > 0]
        if rs:
            bars = [0.0 if math.isnan(r["std"]) else r["std"] for r in rs]  # one seed: no bar
            ax.errorbar([r["labelled_pct"] for r in rs], [r["mean"] for r in rs], yerr=bars,
                        color=color, marker="o", ms=4, capsize=2, label=row.name)
        if row.paper:
            xs = sorted(row.paper)
            ax.plot(xs, [row.paper[x] for x in xs], "--", color=color, alpha=0.6, lw=1)
    ax.set_xscale("log")
    ax.set_xticks(list(table.fractions))
    ax.set_xticklabels([f"{p:g}" for p in table.fractions])
    ax.set_xlabel("images with labelled landmarks (%)")
    ax.set_ylabel(f"test {table.metric} ({table.unit})")
    ax.set_title(table.title, fontsize=9)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # no finished cell yet: no legend
        title = "ours (solid); paper (dashed)" if table.has_paper else "ours (mean +- std over seeds)"
        ax.legend(fontsize=8, title=title, title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
