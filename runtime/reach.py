"""A model's effective halo: the tile context that reproduces an untiled pass to a tolerance.

The halo in a model's metadata is its receptive-field radius counted from the architecture:
tiles with that much context give exactly the untiled result, but a pixel's output depends on
far context by much less than the bound allows (the shipped 2D network: 117 px counted, its
outputs move by at most 2e-6 of their range with 85 px; benchmarks/RESULTS.md). Export measures, on
the training image and on a noise image, the smallest context for which *every* output pixel of
a tiled pass stays within ``TOLERANCE`` of the untiled pass's output range, keeping a safety
``MARGIN``: a candidate is accepted only when the largest difference measured is at most
``TOLERANCE / MARGIN``. Why measured and not derived: the decay of a U-Net's dependence on far
context depends on its weights, not only its architecture. The same search, run stage by stage
(``runtime.staged``: each stage's tiles with their own context), gives ``stage_halo``, the
context each stage needs on its own when in-memory frames are restored stage by stage. Arrays
are ``YX`` or ``ZYX``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np

from .model import Model
from .normalize import frame_range
from .predict import PredictOptions, Predictor
from .staged import staged_runner

log = logging.getLogger(__name__)

#: The contract: every output within this fraction of the untiled output's range (max - min)
TOLERANCE = 1e-5
#: Measured differences must stay this many times below the tolerance (other images differ)
MARGIN = 4.0
#: Inner tile (planes in z; px in y-x) of the measurement: small, so many pixels lie near a seam
PROBE_TILE = (8, 96)
#: Candidate halos: k/16 of the exact halo for k = 1..16, rounded up to the pooling grid
LADDER_STEPS = 16


def _predictor(model: Model, halo: Sequence[int], tile: Sequence[int] | None) -> Predictor:
    ndim = model.metadata.ndim
    options = PredictOptions(
        tile=None if tile is None else tile[-1],
        tile_z=None if tile is None or ndim == 2 else tile[0],
        overlap=int(halo[-1]),
        overlap_z=int(halo[0]) if ndim == 3 else None,
        progress=False,
    )
    return Predictor(model, options)


def differences(tiled: Sequence[np.ndarray], untiled: Sequence[np.ndarray]) -> dict[str, float]:
    """Largest |tiled - untiled| per output (denoised, deconvolved), as a fraction of the
    untiled output's range (max - min)."""
    out = {}
    for name, ref, got in zip(("denoised", "deconvolved"), untiled, tiled):
        span = float(ref.max() - ref.min()) or 1.0
        out[name] = float(np.abs(got.astype(np.float64) - ref).max() / span)
    return out


def ladder(exact: Sequence[int], multiple: Sequence[int], steps: int = LADDER_STEPS):
    """Candidate halos, smallest first: at step k each axis takes the smallest context of at
    least k/steps of its exact halo that is the exact halo minus whole size multiples (so
    tiles keep the untiled pass's pooling grid). The last candidate is the exact halo."""
    rungs = []
    for k in range(1, steps + 1):
        rung = []
        for e, m in zip(exact, multiple):
            need = e * k / steps
            rung.append(int(e - (e - need) // m * m) if need < e else int(e))
        if not rungs or rung != rungs[-1]:
            rungs.append(rung)
    return rungs


def stage_ladder(exact: Sequence[int], multiple: Sequence[int], steps: int = LADDER_STEPS):
    """Candidate contexts per stage, smallest first: at step k each axis takes the smallest
    multiple of its size multiple of at least k/steps of its exact halo, at most the exact halo
    (``runtime.staged`` puts every tile on the pooling grid itself). The last is the exact
    halo: each stage's receptive field lies inside the whole model's."""
    rungs = []
    for k in range(1, steps + 1):
        rung = [min(int(e), -(-e * k // (steps * m)) * m) for e, m in zip(exact, multiple)]
        if not rungs or rung != rungs[-1]:
            rungs.append(rung)
    return rungs


def staged_pass(
    model: Model, image: np.ndarray, reach, tile, batch: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Restore ``image`` stage by stage with ``reach`` px of context per stage and stage-2
    tiles of ``tile`` (per axis; ``None``: one tile), ``batch`` tiles per run."""
    meta = model.metadata
    image = np.asarray(image, np.float32)
    lo, hi = frame_range(image, meta.normalization, "the probe image")
    den = np.empty(image.shape, np.float32)
    dec = np.empty(tuple(n * f for n, f in zip(image.shape, meta.output_scale)), np.float32)
    runner = staged_runner(model.stages(), image.shape, tile, reach, meta, batch)
    runner.run(image, lo, hi, den, dec)
    return den, dec


def _search(rungs: list, worst_at) -> tuple[list, float]:
    """The first rung whose difference is at most the limit (``worst_at`` returns the
    difference, or None above the limit), by bisection: more context never moves the output
    further from the untiled pass, and the last rung passes by construction."""
    lo, hi, worst = 0, len(rungs) - 1, 0.0
    while lo < hi:
        mid = (lo + hi) // 2
        found = worst_at(rungs[mid])
        if found is not None:
            hi, worst = mid, found
        else:
            lo = mid + 1
    return rungs[hi], worst


def probe_images(crop: np.ndarray, seed: int = 0) -> list[np.ndarray]:
    """The measurement images: the training crop and uniform noise of the same shape
    (noise has the most high-frequency content a tile seam could disturb)."""
    rng = np.random.default_rng(seed)
    crop = np.asarray(crop, np.float32)
    noise = rng.uniform(0.0, 1.0, crop.shape).astype(np.float32)
    return [crop, noise]


def measure_effective_halo(
    model: Model,
    images: Sequence[np.ndarray],
    tolerance: float = TOLERANCE,
    margin: float = MARGIN,
) -> dict:
    """Measure the effective halo of ``model`` on ``images`` (spatial axes only).

    Parameters
    ----------
    model : Model
        The exported model (its metadata's ``halo`` is the exact one).
    images : sequence of numpy.ndarray
        Frames (``YX``) or stacks (``ZYX``) to measure on, each larger than a probe tile.
    tolerance : float
        Largest accepted difference from the untiled pass, as a fraction of its output range.
    margin : float
        The measured difference must be at most ``tolerance / margin``.

    Returns
    -------
    dict
        ``halo`` (per axis, input px), ``tolerance``, ``margin``, ``max_difference`` (the
        largest measured at that halo, fraction of range), ``probe_tile`` and ``images``
        (their shapes), and for models whose graph can be cut in two, ``stage_halo`` and
        ``stage_max_difference``: the record written into the metadata as ``effective_halo``.
    """
    meta = model.metadata
    ndim = meta.ndim
    limit = tolerance / margin
    # at most half the smallest image per axis, so every axis has a seam to measure
    smallest = np.min([im.shape for im in images], axis=0)
    tile = [PROBE_TILE[0]] * (ndim - 2) + [PROBE_TILE[1]] * 2
    tile = [
        int(max(m, min(t, n // 2) // m * m)) for t, n, m in zip(tile, smallest, meta.size_multiple)
    ]
    untiled = [_predictor(model, meta.halo, None).predict_array(im) for im in images]

    def one_pass(rung):
        predictor = _predictor(model, rung, tile)
        found = max(
            max(differences(predictor.predict_array(im), ref).values())
            for im, ref in zip(images, untiled)
        )
        return found if found <= limit else None

    halo, worst = _search(ladder(meta.halo, meta.size_multiple), one_pass)
    record = {
        "halo": [int(h) for h in halo],
        "tolerance": tolerance,
        "margin": margin,
        "max_difference": float(f"{worst:.3g}"),
        "probe_tile": tile,
        "images": [list(im.shape) for im in images],
    }
    if model.stages() is not None:

        def two_pass(rung):
            found = max(
                max(differences(staged_pass(model, im, rung, tile), ref).values())
                for im, ref in zip(images, untiled)
            )
            return found if found <= limit else None

        stage, stage_worst = _search(stage_ladder(meta.halo, meta.size_multiple), two_pass)
        record["stage_halo"] = [int(h) for h in stage]
        record["stage_max_difference"] = float(f"{stage_worst:.3g}")
    log.info(
        "effective halo %s px (exact %s): largest difference %.2g of the output range",
        "x".join(map(str, record["halo"])),
        "x".join(map(str, meta.halo)),
        worst,
    )
    return record


def halo_note(path: str | os.PathLike) -> str:
    """``effective halo 85x85 px, 48x48 per stage (exact 117x117)`` for the model at ``path``:
    for the CLI."""
    meta = Model(path, provider="cpu", self_check=False).metadata
    exact = "x".join(map(str, meta.halo))
    record = meta.effective_halo
    if record is None:
        return f"halo {exact} px (exact)"
    stage = record.get("stage_halo")
    per_stage = f", {'x'.join(map(str, stage))} per stage" if stage else ""
    return f"effective halo {'x'.join(map(str, record['halo']))} px{per_stage} (exact {exact})"
