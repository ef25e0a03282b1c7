"""Reduced-precision models (int8 for CPUs, fp16 for GPUs), each behind a quality gate.

int8: onnxruntime's static quantiser inserts QuantizeLinear/DequantizeLinear pairs around convs
whose activation ranges come from calibration tiles of the training image(s).
fp16: onnxruntime's own float16 converter (shipped inside the onnxruntime wheel) stores weights
and activations in half precision and keeps the model's input and outputs float32, so the
runtime feeds and reads it exactly as the fp32 model (meant for GPUs; the CPU provider runs
it too, more slowly than fp32, which is what the gate uses).

A reduced model is accepted only if both of its outputs reproduce the fp32 model's within
``min_psnr`` dB (PSNR of its output against the fp32 output, peak = the fp32 output's range) on
the calibration tiles; otherwise nothing is written. The metadata contract is carried over,
with a ``quantization`` record added to the training summary.
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
from .onnx import ExportError

log = logging.getLogger(__name__)

#: Default quality gate: reduced-precision output vs fp32 output.
MIN_PSNR_DB = 45.0
#: The reduced precisions ``export --quantize`` offers.
KINDS = ("int8", "fp16")


class _Tiles(CalibrationDataReader):
    def __init__(self, tiles: list[np.ndarray]):
        self._iter: Iterator[np.ndarray] = iter(tiles)

    def get_next(self) -> dict[str, np.ndarray] | None:
        tile = next(self._iter, None)
        return None if tile is None else {INPUT_NAME: tile}


def output_psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """PSNR (dB) of ``test`` against ``reference`` with the reference's range as peak."""
    peak = float(reference.max() - reference.min())
    mse = float(np.mean((reference.astype(np.float64) - test) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


def quantize_model(
    fp32_path: str | os.PathLike,
    output: str | os.PathLike,
    tiles: list[np.ndarray],
    min_psnr: float = MIN_PSNR_DB,
    kind: str = "int8",
) -> dict[str, float]:
    """Write an int8 (QDQ) or fp16 version of ``fp32_path`` if it passes the quality gate.

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
        int8: static QDQ, per-channel weights (CPU speed). fp16: half-precision graph with
        float32 input and outputs (GPU speed).

    Returns
    -------
    dict
        PSNR (dB) per output on the calibration tiles.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    fp32 = onnx.load(str(fp32_path))
    props = {p.key: p.value for p in fp32.metadata_props}
    metadata = ModelMetadata.from_props(props, source=f"model '{fp32_path}'")
    with tempfile.TemporaryDirectory() as tmp:
        reduced = Path(tmp) / f"{kind}.onnx"
        if kind == "int8":
            _int8(fp32_path, reduced, tiles, tmp)
        else:
            _fp16(fp32, reduced)
        scores = _compare(str(fp32_path), str(reduced), tiles)
        worst = min(scores.values())
        if not worst >= min_psnr:
            raise ExportError(
                f"{kind} model reproduces fp32 only to {worst:.1f} dB (< {min_psnr:g} dB); "
                "not written (use the fp32 model, or lower --min-psnr knowingly)"
            )
        proto = onnx.load(str(reduced))
    training = dict(metadata.training)
    training["quantization"] = {
        "type": DESCRIPTIONS[kind],
        "calibration_tiles": len(tiles),
        "psnr_vs_fp32_db": {k: round(v, 2) for k, v in scores.items()},
    }
    record = ModelMetadata(**{**metadata.__dict__, "training": training})
    del proto.metadata_props[:]
    for key, value in record.to_props().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    with atomic_output(Path(output)) as tmp_out:
        tmp_out.write_bytes(proto.SerializeToString())
    log.info("%s model written: %s", kind, scores)
    return scores


DESCRIPTIONS = {
    "int8": "int8 static QDQ, per-channel weights",
    "fp16": "fp16 weights and activations, float32 input and outputs",
}


def _int8(fp32_path, output: Path, tiles: list[np.ndarray], tmp: str) -> None:
    prepared = Path(tmp) / "prepared.onnx"
    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    quantize_static(
        str(prepared),
        str(output),
        _Tiles(tiles),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )


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


def _compare(fp32: str, int8: str, tiles: list[np.ndarray]) -> dict[str, float]:
    sessions = [ort.InferenceSession(p, providers=["CPUExecutionProvider"]) for p in (fp32, int8)]
    scores: dict[str, list[float]] = {name: [] for name in OUTPUT_NAMES}
    for tile in tiles:
        a, b = (s.run(list(OUTPUT_NAMES), {INPUT_NAME: tile}) for s in sessions)
        for name, x, y in zip(OUTPUT_NAMES, a, b):
            scores[name].append(output_psnr(x, y))
    return {name: float(np.min(v)) for name, v in scores.items()}
