"""PyTorch two-stage model -> self-describing ONNX file, with a parity check on every export.

The graph has one input ``input`` (``[N, 1, *spatial]``, float32, normalised domain) and two
outputs, ``denoised`` and ``deconvolved``, with dynamic batch and spatial axes. The metadata
contract (:mod:`zsdeconvnet.runtime.metadata`) is written into ``metadata_props``. A model whose
onnxruntime output differs from torch by more than the tolerance is not written.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from ..runtime.errors import InputError
from ..runtime.io import atomic_output
from ..runtime.metadata import INPUT_NAME, OUTPUT_NAMES, ModelMetadata

log = logging.getLogger(__name__)

#: Max |onnxruntime - torch| in the normalised domain for an export to be accepted.
PARITY_TOLERANCE = 1e-4
OPSET = 18


class ExportError(RuntimeError):
    """The exported graph does not reproduce the torch model."""


def to_onnx_bytes(module: torch.nn.Module, ndim: int, example_size: int = 64) -> bytes:
    """Trace ``module`` (CPU, float32, eval mode) to ONNX with dynamic batch and spatial axes."""
    module = module.eval().float().cpu()
    spatial = (example_size,) * ndim if ndim == 2 else (16, example_size, example_size)
    example = torch.zeros((1, 1, *spatial))
    names = ["z", "y", "x"][-ndim:]
    in_axes = {0: "batch", **{2 + i: n for i, n in enumerate(names)}}
    out_axes = {0: "batch", **{2 + i: f"{n}_out" for i, n in enumerate(names)}}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            buffer,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={INPUT_NAME: in_axes, OUTPUT_NAMES[0]: in_axes, OUTPUT_NAMES[1]: out_axes},
            opset_version=OPSET,
            dynamo=False,
        )
    return buffer.getvalue()


def attach_metadata(model_bytes: bytes, metadata: ModelMetadata) -> bytes:
    """Return the model with the metadata contract in its ``metadata_props``."""
    proto = onnx.load_from_string(model_bytes)
    del proto.metadata_props[:]
    for key, value in metadata.to_props().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "zsdeconvnet"
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def parity(module: torch.nn.Module, model_bytes: bytes, x: np.ndarray) -> float:
    """Max absolute difference between torch and onnxruntime outputs on ``x`` (``[N,1,...]``)."""
    with torch.no_grad():
        expected = [t.numpy() for t in module.eval().cpu()(torch.from_numpy(x))]
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    got = session.run(list(OUTPUT_NAMES), {INPUT_NAME: x})
    return float(max(np.abs(a - b).max() for a, b in zip(expected, got)))


def export_model(
    module: torch.nn.Module,
    metadata: ModelMetadata,
    path: str | os.PathLike,
    parity_input: np.ndarray,
    tolerance: float = PARITY_TOLERANCE,
) -> float:
    """Export ``module`` to ``path`` after checking onnxruntime against torch.

    Parameters
    ----------
    module : torch.nn.Module
        Two-output network (denoised, deconvolved).
    metadata : ModelMetadata
        The contract to embed.
    path : path-like
        Destination ``.onnx`` (written atomically).
    parity_input : numpy.ndarray
        ``[N, 1, *spatial]`` float32 in the normalised domain (the training image, cropped),
        spatial sizes multiples of ``metadata.size_multiple``.
    tolerance : float
        Maximum accepted absolute difference.

    Returns
    -------
    float
        The measured max absolute difference.

    Raises
    ------
    ExportError
        When the difference exceeds ``tolerance``; nothing is written.
    """
    if parity_input.ndim != metadata.ndim + 2:
        raise InputError(f"parity input must be [N, 1, {metadata.ndim} spatial axes]")
    model_bytes = attach_metadata(to_onnx_bytes(module, metadata.ndim), metadata)
    diff = parity(module, model_bytes, np.ascontiguousarray(parity_input, np.float32))
    if not diff <= tolerance:
        raise ExportError(
            f"onnxruntime differs from torch by {diff:.3g} (> {tolerance:g}); model not written"
        )
    with atomic_output(Path(path)) as tmp:
        tmp.write_bytes(model_bytes)
    log.info("exported %s (parity max |diff| %.2e)", path, diff)
    return diff
