"""The quality report written with every trained model (``physics.quality``).

After export, the model file itself restores the centre of the first training frame (at most
512 x 512 px; 16 x 128 x 128 for a stack); the restoration is measured against the raw image
and the PSF, and the result is written three ways: ``<run>/report.json`` (every number),
``<run>/report.png`` (raw, deconvolved, residual and the numbers) and the model's metadata
(``quality``: a summary line and the warnings, shown by ``zsdeconvnet info`` and at the end of
``train``). The PSF check
that ran before training (``<run>/psf_check.json``) is carried into all three.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..physics.metrics import residual
from ..physics.psf import PSF, crop_psf, resample_psf
from ..physics.psf_check import psf_cutoff
from ..physics.quality import QualityReport, assess
from ..runtime.errors import InputError
from ..runtime.io import atomic_output, write_json
from ..runtime.model import Model, is_fp16
from ..runtime.predict import PredictOptions, Predictor
from ..training.config import TrainConfig
from ..training.run import PSF_CHECK_JSON, load_frames
from .halo import central_crop
from .onnx import attach_metadata

log = logging.getLogger(__name__)

REPORT_JSON = "report.json"
REPORT_PNG = "report.png"
#: The largest field measured (z, y, x): the centre of the first frame or stack
REPORT_FIELD = {2: (512, 512), 3: (16, 128, 128)}


def add_quality_report(model_path: str | os.PathLike, state: dict, run_dir: Path | None) -> dict:
    """Measure the model at ``model_path`` on its training image, write the report into the
    run folder (when given) and the metadata; returns the report's record (``{}`` when the
    training image cannot be read, for SIM models, and for fp16 models)."""
    cfg = TrainConfig.from_json(state["config"])
    model = Model(model_path, provider="cpu", self_check=False)
    if cfg.mode == "sim2d" or is_fp16(model.metadata):
        return {}
    try:
        frames, _ = load_frames([Path(p) for p in cfg.images], cfg.channel, cfg.ndim)
    except (InputError, OSError) as err:
        log.warning("no quality report: the training image is not readable (%s)", err)
        return {}
    if not frames:  # trained on arrays handed over in code, not on files
        log.info("no quality report: the run names no training image")
        return {}
    raw = central_crop(frames[0], model, REPORT_FIELD[cfg.ndim])
    den, dec = Predictor(model, PredictOptions(progress=False)).predict_array(raw)
    camera = PSF(
        state["psf"].numpy().astype(np.float32), tuple(state["psf_pixel_size_nm"]), "training PSF"
    )
    pixel_nm = float(state["pixel_size_nm"])
    factor = int(model.metadata.output_scale[-1])
    grid = (pixel_nm / factor,) * 2
    if cfg.ndim == 3:
        grid = (float(state["z_step_nm"]),) + grid
    psf_sr = crop_psf(resample_psf(camera, grid), cfg.psf_sigmas)
    kc = psf_cutoff(camera)
    check = _psf_check(run_dir)
    data_kc = kc * check["ratio"] if check and check["verdict"] != "inconclusive" else None
    report = assess(raw, den, dec, psf_sr, pixel_nm, kc, factor, data_kc)
    if check and check["verdict"] in ("too narrow", "too wide"):
        report.warnings.insert(0, f"PSF check before training: PSF {check['verdict']}")
    record = {"summary": report.summary(), **report.to_dict(), "psf_check": check}
    if run_dir is not None:
        write_json(run_dir / REPORT_JSON, record)
        write_report_png(
            run_dir / REPORT_PNG, raw, dec, residual(dec, raw, psf_sr.data, factor), report
        )
    metadata = replace(model.metadata, quality=_metadata_record(record))
    data = attach_metadata(Path(model_path).read_bytes(), metadata)
    with atomic_output(Path(model_path)) as tmp:
        tmp.write_bytes(data)
    return record


def _metadata_record(record: dict) -> dict:
    """What the model file carries: the summary, the warnings and the main numbers."""
    keep = ("summary", "warnings", "data_term", "residual_structure", "resolution_nm")
    out = {k: record[k] for k in keep}
    out |= {k: record[k] for k in ("clipped_fraction", "ringing")}
    if record.get("psf_check"):
        out["psf_check"] = {k: record["psf_check"][k] for k in ("verdict", "ratio")}
    return out


def _psf_check(run_dir: Path | None) -> dict | None:
    path = None if run_dir is None else run_dir / PSF_CHECK_JSON
    if path is None or not path.exists():
        return None
    return json.loads(path.read_text())


def write_report_png(
    path: Path, raw: np.ndarray, dec: np.ndarray, res: np.ndarray, report: QualityReport
) -> None:
    """Raw, deconvolved and residual (the middle plane of a stack) beside the numbers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def plane(a):
        return a[a.shape[0] // 2] if a.ndim == 3 else a

    fig, axes = plt.subplots(1, 4, figsize=(17, 4.6))
    for ax, image, title in zip(
        axes,
        (plane(raw), plane(dec), plane(res)),
        ("raw", "deconvolved", "residual (re-blurred output - raw)"),
    ):
        lo, hi = np.percentile(image, [0.5, 99.5])
        if title.startswith("residual"):
            lo, hi = -max(abs(lo), abs(hi)), max(abs(lo), abs(hi))
        ax.imshow(
            image, cmap="RdBu_r" if title.startswith("residual") else "gray", vmin=lo, vmax=hi
        )
        ax.set_title(title)
        ax.axis("off")
    res_nm = report.resolution_nm
    lines = [
        f"data term        {report.data_term:.4f}",
        f"residual struct. {_fmt(report.residual_structure)}",
        f"resolution (nm)  raw {_fmt(res_nm['input'], 0)}",
        f"                 denoised {_fmt(res_nm['denoised'], 0)}",
        f"                 deconvolved {_fmt(res_nm['deconvolved'], 0)}",
        f"clipped          {report.clipped_fraction:.3%}",
        f"ringing          {_fmt(report.ringing)}",
        "",
        *(
            ["warnings:"] + [f"- {w[:60]}" for w in report.warnings]
            if report.warnings
            else ["no warnings"]
        ),
    ]
    axes[3].text(0, 1, "\n".join(lines), va="top", family="monospace", fontsize=8)
    axes[3].axis("off")
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)


def _wrapped(warnings: list[str]) -> list[str]:
    import textwrap

    lines = ["warnings:"]
    for w in warnings:
        lines += textwrap.wrap(w, 56, initial_indent="- ", subsequent_indent="  ")
    return lines


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"
