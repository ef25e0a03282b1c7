"""The self-check a reduced-precision model carries: one input tile and its fp32 outputs.

int8 and fp16 kernels differ between machines (onnxruntime's x86 int8 path saturates 16-bit
sums on CPUs without VNNI; GPUs pick their own fp16 kernels), so a model that reproduced fp32
where it was exported can be wrong where it runs. ``export --quantize`` therefore stores a small
tile (normalised input, ``[1, 1, *spatial]``) with the fp32 model's outputs for it and the gate
(dB) it was held to; the runtime runs the tile once when it loads the model and refuses the
model, naming the measured PSNR, if it misses the gate on this machine.

The record lives in the model metadata (``zsdeconvnet.self_check``, JSON): arrays are float32
little-endian, zlib-compressed and base64-encoded, each bounded by ``MAX_ARRAY_BYTES``.
"""

from __future__ import annotations

import base64
import binascii
import platform
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .metadata import OUTPUT_NAMES

#: Largest decoded array a self-check may hold (a 2D 64x64 tile's 128x128 output is 64 KiB)
MAX_ARRAY_BYTES = 1 << 20
#: Arrays a record holds: the input and one per model output
ARRAY_NAMES = ("input", *OUTPUT_NAMES)


def output_psnr(reference: np.ndarray, test: np.ndarray, peak: float | None = None) -> float:
    """PSNR (dB) of ``test`` against ``reference``; peak: the reference's range unless given."""
    peak = float(reference.max() - reference.min()) if peak is None else float(peak)
    mse = float(np.mean((reference.astype(np.float64) - test) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


def int8_kernels() -> str:
    """Which of onnxruntime's int8 CPU kernel families this machine gets, in words.

    On x86 it depends on VNNI (32-bit accumulation of u8 x s8 products) versus AVX2 or AVX-512
    without it (16-bit pair sums that can saturate); read from ``/proc/cpuinfo`` where there is
    one, else the architecture alone.
    """
    machine = platform.machine().lower()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags = set(line.split(":", 1)[1].split())
            break
    if machine in ("arm64", "aarch64") or "asimd" in flags:
        return "arm64" + (" dotprod" if "asimddp" in flags else "")
    if not flags:
        return machine or "unknown CPU"
    if flags & {"avx512_vnni", "avx_vnni", "amx_int8"}:
        return "x86 VNNI"
    if "avx512bw" in flags:
        return "x86 AVX-512 without VNNI"
    if "avx2" in flags:
        return "x86 AVX2 without VNNI"
    return "x86 without AVX2"


def encode_array(array: np.ndarray) -> dict[str, Any]:
    """A float32 array as a JSON-ready record (shape + compressed base64 bytes)."""
    data = np.ascontiguousarray(array, dtype="<f4")
    if data.nbytes > MAX_ARRAY_BYTES:
        raise ValueError(f"self-check array of {data.nbytes} bytes exceeds {MAX_ARRAY_BYTES}")
    packed = base64.b64encode(zlib.compress(data.tobytes(), 9)).decode("ascii")
    return {"shape": list(data.shape), "float32_zlib_base64": packed}


def decode_array(record: Any, source: str) -> np.ndarray:
    """The array of an ``encode_array`` record; any damage is an ``InputError``."""
    damaged = f"{source} has a damaged self-check record; re-export it with 'zsdeconvnet export'"
    try:
        shape = tuple(int(v) for v in record["shape"])
        nbytes = 4 * int(np.prod(shape, dtype=np.int64))
        if not 2 < len(shape) < 6 or min(shape) < 1 or nbytes > MAX_ARRAY_BYTES:
            raise InputError(damaged)
        raw = zlib.decompressobj().decompress(
            base64.b64decode(record["float32_zlib_base64"], validate=True), MAX_ARRAY_BYTES + 1
        )
    except (KeyError, TypeError, ValueError, binascii.Error, zlib.error):
        raise InputError(damaged) from None
    if len(raw) != nbytes:
        raise InputError(damaged)
    array = np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)
    if not np.isfinite(array).all():
        raise InputError(damaged)
    return array


def make_record(
    tile: np.ndarray,
    outputs: dict[str, np.ndarray],
    gate_db: float,
    psnr_db: dict[str, float],
    peak: dict[str, float],
) -> dict[str, Any]:
    """The ``self_check`` metadata record (written by ``export --quantize``).

    Parameters
    ----------
    tile : numpy.ndarray
        Normalised input ``[1, 1, *spatial]``.
    outputs : dict
        The fp32 model's outputs for ``tile``, by output name.
    gate_db : float
        The PSNR (dB, each output against fp32) the model must reach where it runs.
    psnr_db : dict
        What the reduced model reached on ``tile`` where it was exported, by output name.
    peak : dict
        The PSNR peak per output: the fp32 output's range over all calibration tiles (a dim
        check tile is judged against the image's range, not its own).
    """
    record: dict[str, Any] = {"gate_db": float(gate_db)}
    record["peak"] = {k: float(peak[k]) for k in OUTPUT_NAMES}
    record["psnr_at_export_db"] = {k: round(float(v), 2) for k, v in psnr_db.items()}
    record["input"] = encode_array(tile)
    for name in OUTPUT_NAMES:
        record[name] = encode_array(outputs[name])
    return record


def run_self_check(
    run, record: dict[str, Any], source: str, machine: str = "unknown"
) -> dict[str, float]:
    """Run a model's self-check tile and refuse the model if it misses its gate here.

    Parameters
    ----------
    run : callable
        ``run(batch) -> (denoised, deconvolved)``, the loaded model.
    record : dict
        The model's ``self_check`` metadata record.
    source : str
        How to name the model in messages.
    machine : str
        How to name what runs it (``int8_kernels()`` on a CPU, else the provider).

    Returns
    -------
    dict
        PSNR (dB) of each output against the stored fp32 output, on this machine.

    Raises
    ------
    InputError
        If the record is damaged or either output misses the gate.
    """
    damaged = InputError(f"{source} has a damaged self-check record; re-export it")
    if not isinstance(record, dict) or not isinstance(record.get("gate_db"), int | float):
        raise damaged
    peaks = record.get("peak")
    if not isinstance(peaks, dict) or not all(
        isinstance(peaks.get(k), int | float) and peaks[k] > 0 for k in OUTPUT_NAMES
    ):
        raise damaged
    arrays = {name: decode_array(record.get(name), source) for name in ARRAY_NAMES}
    try:
        produced = dict(zip(OUTPUT_NAMES, run(arrays["input"])))
    except InputError:
        raise
    except Exception as err:  # onnxruntime raises several private exception types
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise InputError(f"{source}: its self-check tile does not run ({first})") from None
    scores = {}
    for name in OUTPUT_NAMES:
        if produced[name].shape != arrays[name].shape:
            raise InputError(f"{source} has a self-check record of the wrong shape; re-export it")
        scores[name] = output_psnr(arrays[name], produced[name], peaks[name])
    worst = min(scores, key=scores.get)
    gate = float(record["gate_db"])
    if not scores[worst] >= gate:
        raise InputError(
            f"{source} reproduces its fp32 reference on this machine only to "
            f"{scores[worst]:.1f} dB ({worst} output; its gate is {gate:g} dB): this machine "
            f"({machine}) computes its reduced precision differently from the one that "
            "exported it; use the fp32 model here, or export --quantize on this machine"
        )
    return scores
