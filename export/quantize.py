"""Reduced-precision models (int8 for CPUs, fp16 for GPUs), each behind a quality gate.

int8: onnxruntime's static quantiser inserts QuantizeLinear/DequantizeLinear pairs around convs
whose activation ranges come from calibration tiles of the training image(s).
fp16: onnxruntime's own float16 converter (shipped inside the onnxruntime wheel) stores weights
and activations in half precision and keeps the model's input and outputs float32, so the
runtime feeds and reads it exactly as the fp32 model (meant for GPUs; the CPU provider runs
it too, more slowly than fp32, which is what the gate uses).

A reduced model is accepted only if both of its outputs reproduce the fp32 model's within
``min_psnr`` dB (PSNR of its output against the fp32 output, the squared errors of all
calibration tiles pooled, peak = the fp32 output's range over all of them) on the calibration
tiles and on the self-check tile; otherwise nothing is written. The metadata contract is carried
over, with a ``quantization`` record added to the training summary and a ``self_check`` record (one
small tile with its fp32 outputs) that the runtime runs at load, so a model whose kernels
behave differently on another machine is refused there instead of being silently wrong.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_static,
)

from ..runtime.io import atomic_output
from ..runtime.metadata import INPUT_NAME, OUTPUT_NAMES, ModelMetadata
from ..runtime.selfcheck import MAX_ARRAY_BYTES, make_record, output_psnr
from .onnx import ExportError

log = logging.getLogger(__name__)

#: Default quality gate: reduced-precision output vs fp32 output.
MIN_PSNR_DB = 45.0
#: The reduced precisions ``export --quantize`` offers.
KINDS = ("int8", "fp16")

#: int8 recipes (``quantize_static`` arguments), compared by ``benchmarks/int8_recipes.py``.
#: On x86 CPUs without VNNI, onnxruntime multiplies u8 activations by s8 weights with
#: ``vpmaddubsw``, which adds pairs of products into 16 bits and saturates: full 8-bit weights
#: then lose the image (measured 23.7 dB against fp32 on an AVX2-only CPU). 7-bit weights
#: (``reduce_range``) keep every pair sum below 2**15 (2 * 255 * 64), so one model file is
#: exact on every x86 kind; u8 x u8 takes another kernel with no saturation.
INT8_RECIPES: dict[str, dict] = {
    "qdq-s8-perchannel": {
        "quant_format": QuantFormat.QDQ,
        "per_channel": True,
        "activation_type": QuantType.QUInt8,
        "weight_type": QuantType.QInt8,
    },
    "qdq-s8-perchannel-7bit": {
        "quant_format": QuantFormat.QDQ,
        "per_channel": True,
        "reduce_range": True,
        "activation_type": QuantType.QUInt8,
        "weight_type": QuantType.QInt8,
    },
    "qdq-s8-pertensor-7bit": {
        "quant_format": QuantFormat.QDQ,
        "per_channel": False,
        "reduce_range": True,
        "activation_type": QuantType.QUInt8,
        "weight_type": QuantType.QInt8,
    },
    "qdq-u8u8-perchannel": {
        "quant_format": QuantFormat.QDQ,
        "per_channel": True,
        "activation_type": QuantType.QUInt8,
        "weight_type": QuantType.QUInt8,
    },
    "qoperator-s8-perchannel-7bit": {
        "quant_format": QuantFormat.QOperator,
        "per_channel": True,
        "reduce_range": True,
        "activation_type": QuantType.QUInt8,
        "weight_type": QuantType.QInt8,
    },
}
#: The recipe ``export --quantize int8`` uses (chosen by measurement, benchmarks/RESULTS.md).
INT8_RECIPE = "qdq-s8-perchannel-7bit"


class _Tiles(CalibrationDataReader):
    def __init__(self, tiles: list[np.ndarray]):
        self._iter: Iterator[np.ndarray] = iter(tiles)

    def get_next(self) -> dict[str, np.ndarray] | None:
        tile = next(self._iter, None)
        return None if tile is None else {INPUT_NAME: tile}


def check_tile(tile: np.ndarray, size_multiple: tuple[int, ...]) -> np.ndarray:
    """The centre of a calibration tile, small enough to ride in the model metadata.

    64 px per axis in 2D, 8 x 32 x 32 in 3D (rounded to the model's size multiple); the
    deconvolved output of the largest is 64 KiB (2D) or 128 KiB (3D) of float32.
    """
    spatial = tile.shape[2:]
    target = (64, 64) if len(spatial) == 2 else (8, 32, 32)
    size = [
        max(m, min(s, t) // m * m) if s >= m else s
        for s, t, m in zip(spatial, target, size_multiple)
    ]
    start = [(s - n) // 2 for s, n in zip(spatial, size)]
    index = tuple(slice(a, a + n) for a, n in zip(start, size))
    crop = np.ascontiguousarray(tile[(slice(None), slice(None), *index)], dtype=np.float32)
    if crop.nbytes * 4 > MAX_ARRAY_BYTES:  # the deconvolved output: 2x in y and x, 2D or 3D
        raise ExportError(f"calibration tile {crop.shape} too large for a self-check")
    return crop


def quantize_model(
    fp32_path: str | os.PathLike,
    output: str | os.PathLike,
    tiles: list[np.ndarray],
    min_psnr: float = MIN_PSNR_DB,
    kind: str = "int8",
    recipe: str = INT8_RECIPE,
) -> dict[str, float]:
    """Write an int8 (QDQ) or fp16 version of ``fp32_path`` if it passes the quality gate.

    The written model carries a self-check (``runtime.selfcheck``): the centre of the first
    tile with the fp32 outputs for it, and ``min_psnr``, so that the runtime refuses the model
    on a machine where it misses the gate. That tile is part of the gate here too.

    Parameters
    ----------
    fp32_path : path-like
        An exported zsdeconvnet model.
    output : path-like
        Where to write the quantised model (atomically).
    tiles : list of numpy.ndarray
        Calibration inputs ``[1, 1, *spatial]`` in the normalised domain (from the user's image).
    min_psnr : float
        Refuse the quantised model below this PSNR (dB) of either output against fp32.
    kind : {"int8", "fp16"}
        int8: static QDQ, 7-bit per-channel weights (CPU speed). fp16: half-precision graph
        with float32 input and outputs (GPU speed).
    recipe : str
        int8 only: one of ``INT8_RECIPES`` (the default is right on every x86 CPU).

    Returns
    -------
    dict
        PSNR (dB) per output, the worst over the calibration tiles and the check tile.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if recipe not in INT8_RECIPES:
        raise ValueError(f"recipe must be one of {list(INT8_RECIPES)}, got {recipe!r}")
    fp32 = onnx.load(str(fp32_path))
    props = {p.key: p.value for p in fp32.metadata_props}
    metadata = ModelMetadata.from_props(props, source=f"model '{fp32_path}'")
    probe = check_tile(tiles[0], metadata.size_multiple)
    with tempfile.TemporaryDirectory() as tmp:
        reduced = Path(tmp) / f"{kind}.onnx"
        if kind == "int8":
            _int8(fp32_path, reduced, tiles, tmp, recipe)
        else:
            _fp16(fp32, reduced)
        scores, probe_scores, probe_out, peak = _compare(str(fp32_path), str(reduced), tiles, probe)
        worst = min(min(scores.values()), min(probe_scores.values()))
        if not worst >= min_psnr:
            raise ExportError(
                f"{kind} model reproduces fp32 only to {worst:.1f} dB (< {min_psnr:g} dB); "
                "not written (use the fp32 model, or lower --min-psnr knowingly)"
            )
        proto = onnx.load(str(reduced))
    training = dict(metadata.training)
    training["quantization"] = {
        "type": FP16_DESCRIPTION if kind == "fp16" else f"int8 static {recipe}",
        "calibration_tiles": len(tiles),
        "psnr_vs_fp32_db": {k: round(v, 2) for k, v in scores.items()},
    }
    check = make_record(probe, probe_out, min_psnr, probe_scores, peak)
    record = ModelMetadata(**{**metadata.__dict__, "training": training, "self_check": check})
    del proto.metadata_props[:]
    for key, value in record.to_props().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    with atomic_output(Path(output)) as tmp_out:
        tmp_out.write_bytes(proto.SerializeToString())
    log.info("%s model written: %s", kind, scores)
    return scores


FP16_DESCRIPTION = "fp16 weights and activations, float32 input and outputs"


def _int8(fp32_path, output: Path, tiles: list[np.ndarray], tmp: str, recipe: str) -> None:
    prepared = Path(tmp) / "prepared.onnx"
    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    quantize_static(str(prepared), str(output), _Tiles(tiles), **INT8_RECIPES[recipe])


def _fp16(fp32: onnx.ModelProto, output: Path) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    half = convert_float_to_float16(fp32, keep_io_types=True, disable_shape_infer=True)
    _restore_float_scales(half.graph)
    onnx.save(half, str(output))


def _restore_float_scales(graph: onnx.GraphProto) -> None:
    """Give Resize back its float32 ``scales`` (the converter halves them; ONNX forbids it).

    The scales are small integers (2.0), exact in either precision.
    """
    scales = {
        node.input[2] for node in graph.node if node.op_type == "Resize" and len(node.input) > 2
    }
    tensors = [
        a.t
        for node in graph.node
        if node.op_type == "Constant" and node.output[0] in scales
        for a in node.attribute
        if a.name == "value"
    ]
    tensors += [t for t in graph.initializer if t.name in scales]
    for tensor in tensors:
        if tensor.data_type == onnx.TensorProto.FLOAT16:
            value = onnx.numpy_helper.to_array(tensor).astype(np.float32)
            tensor.CopyFrom(onnx.numpy_helper.from_array(value, tensor.name))


def _compare(
    fp32: str, reduced: str, tiles: list[np.ndarray], probe: np.ndarray
) -> tuple[dict[str, float], dict[str, float], dict[str, np.ndarray], dict[str, float]]:
    """PSNR of the reduced model against fp32, per output, over the tiles and on the probe.

    The peak is the fp32 output's range over all tiles together, and the tiles' squared errors
    are pooled, so a dim tile is judged against the image's range as the whole image would be.
    Returns the tiles' PSNR, the probe's PSNR, the fp32 outputs on the probe and the peaks.
    """
    sessions = [
        ort.InferenceSession(p, providers=["CPUExecutionProvider"]) for p in (fp32, reduced)
    ]
    squared = {name: [] for name in OUTPUT_NAMES}
    low = {name: np.inf for name in OUTPUT_NAMES}
    high = {name: -np.inf for name in OUTPUT_NAMES}
    for tile in tiles:
        a, b = (s.run(list(OUTPUT_NAMES), {INPUT_NAME: tile}) for s in sessions)
        for name, x, y in zip(OUTPUT_NAMES, a, b):
            squared[name].append(float(np.mean((x.astype(np.float64) - y) ** 2)))
            low[name], high[name] = min(low[name], float(x.min())), max(high[name], float(x.max()))
    peak = {name: max(high[name] - low[name], 1e-12) for name in OUTPUT_NAMES}
    scores = {
        name: float(10 * np.log10(peak[name] ** 2 / max(np.mean(squared[name]), 1e-30)))
        for name in OUTPUT_NAMES
    }
    a, b = (s.run(list(OUTPUT_NAMES), {INPUT_NAME: probe}) for s in sessions)
    probe_scores = {name: output_psnr(x, y, peak[name]) for name, x, y in zip(OUTPUT_NAMES, a, b)}
    return scores, probe_scores, dict(zip(OUTPUT_NAMES, a)), peak
