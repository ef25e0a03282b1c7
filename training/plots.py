"""Loss curve and preview images (matplotlib, Agg backend, written atomically)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from ..runtime.io import atomic_output


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def loss_curve(csv_path: Path, png_path: Path) -> None:
    """Plot the loss terms against iterations (log scale)."""
    with Path(csv_path).open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    plt = _figure()
    it = np.array([int(r["iteration"]) for r in rows])
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for key in ("loss", "denoise", "deconv"):
        values = np.array([float(r[key]) for r in rows])
        window = max(1, len(values) // 100)
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        ax.plot(it[window - 1 :], smooth, label=key)
    ax.set_xlabel("iteration")
    ax.set_ylabel("L1 loss (normalised units)")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    with atomic_output(png_path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def side_by_side(panels: list[tuple[str, np.ndarray]], png_path: Path, width: float = 4) -> None:
    """Save images next to each other (each percentile-scaled), titled."""
    plt = _figure()
    size = (width * len(panels), width + 0.4)  # room for the titles
    fig, axes = plt.subplots(1, len(panels), figsize=size, dpi=100, layout="constrained")
    for ax, (title, image) in zip(np.atleast_1d(axes), panels):
        lo, hi = np.percentile(image, [0.5, 99.8])
        ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_title(title)
        ax.axis("off")
    with atomic_output(png_path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight", pad_inches=0.1)
    plt.close(fig)


def line_profile(image: np.ndarray, start, end, samples: int = 200) -> np.ndarray:
    """Values along the segment ``start -> end`` (``(x, y)`` in this image's pixels), bilinear."""
    from scipy.ndimage import map_coordinates

    t = np.linspace(0, 1, samples)
    x = start[0] + t * (end[0] - start[0])
    y = start[1] + t * (end[1] - start[1])
    return map_coordinates(np.asarray(image, np.float64), [y, x], order=1, mode="nearest")


def profile_figure(
    panels: list[tuple[str, np.ndarray, int]],
    line: tuple[tuple[float, float], tuple[float, float]],
    pixel_nm: float,
    png_path: Path,
    width: float = 4,
) -> None:
    """Crops side by side with a profile line drawn on each, and a last panel plotting the
    profiles (each scaled to its own 0.5-99.8 percentile range of the crop) against distance.

    ``panels``: ``(title, image, scale)``, ``scale`` the image's grid relative to ``line``'s
    (2 for the 2x output grid); ``pixel_nm``: the line's pixel size (camera pixels).
    """
    plt = _figure()
    size = (width * (len(panels) + 1.3), width + 0.4)
    ratios = [1] * len(panels) + [1.3]
    fig, axes = plt.subplots(
        1,
        len(panels) + 1,
        figsize=size,
        dpi=100,
        layout="constrained",
        gridspec_kw={"width_ratios": ratios},
    )
    (x0, y0), (x1, y1) = line
    length_nm = np.hypot(x1 - x0, y1 - y0) * pixel_nm
    for ax, (title, image, scale) in zip(axes, panels):
        lo, hi = np.percentile(image, [0.5, 99.8])
        ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        # pixel centres: grid coordinate k on a grid `scale` times finer is at (k + 0.5) s - 0.5
        ends = [((x + 0.5) * scale - 0.5, (y + 0.5) * scale - 0.5) for x, y in line]
        ax.plot([e[0] for e in ends], [e[1] for e in ends], color="#ffb000", lw=1.2)
        ax.set_title(title)
        ax.axis("off")
        values = line_profile(image, *ends)
        axes[-1].plot(
            np.linspace(0, length_nm, values.size), (values - lo) / (hi - lo), label=title
        )
    axes[-1].set_xlabel("distance along the line (nm)")
    axes[-1].set_ylabel("intensity (scaled to the crop's range)")
    axes[-1].set_title("profile along the orange line")
    axes[-1].legend(fontsize=8)
    with atomic_output(png_path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight", pad_inches=0.1)
    plt.close(fig)


def preview(model: torch.nn.Module, crop: np.ndarray, cfg, png_path: Path) -> None:
    """raw | denoised | deconvolved on the stored training crop.

    The crop is reflect-padded in y and x before the network sees it and the padding is cut
    from the outputs, as the runtime pads an image: without it the network's zero padding
    draws a bright or dark frame that predictions do not have.
    """
    multiple = cfg.size_multiple if cfg.ndim == 2 else 1
    pad = min(multiple * -(-32 // multiple), (min(crop.shape[-2:]) - 1) // multiple * multiple)
    widths = [(0, 0)] * (crop.ndim - 2) + [(pad, pad)] * 2
    padded = np.pad(crop, widths, mode="reflect").astype(np.float32)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        den, dec = model(torch.from_numpy(padded[None, None]).to(device))
    model.train(was_training)
    den, dec = den[0, 0].float().cpu().numpy(), dec[0, 0].float().cpu().numpy()
    up = dec.shape[-1] // den.shape[-1]
    if pad:
        den = den[..., pad:-pad, pad:-pad]
        dec = dec[..., up * pad : -up * pad, up * pad : -up * pad]
    if crop.ndim == 3:  # stacks: the middle plane
        mid = crop.shape[0] // 2
        crop, den, dec = crop[mid], den[mid], dec[mid]
    side_by_side([("raw", crop), ("denoised", den), ("deconvolved", dec)], png_path)
