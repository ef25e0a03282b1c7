"""A zsdeconvnet ONNX model as a bioimage.io model package (spec 0.5), for deepImageJ, ilastik,
BiaPy and bioimage.io's own tools.

The package holds the ONNX weights, the input and output axes with physical pixel sizes (the
deconvolved output has half the pixel size, so twice the size), the halo of each output, the
normalisation as ``scale_range`` preprocessing, test tensors made from the training image (the
expected outputs computed here with the same normalisation bioimage.io applies), a cover, a
README, the paper cited, and zsdeconvnet's own metadata (PSF, training summary) under
``config.zsdeconvnet``. The description is built and checked with ``bioimageio.spec``;
``bioimageio.core``'s test runs the package against its test tensors.

Differences a consumer should know: bioimage.io tools normalise each tensor (tile) they pass,
where ``zsdeconvnet predict`` normalises whole frames; and the outputs stay in the normalised
domain (bioimage.io has no inverse of ``scale_range``). 2D models only.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from ..runtime.errors import InputError
from ..runtime.io import atomic_output
from ..runtime.metadata import INPUT_NAME, OUTPUT_NAMES, ModelMetadata

#: bioimage.io's ``scale_range`` adds this to the denominator (its default).
EPS = 1e-6
CITATION = (
    "Qiao C, Zeng Y, Meng Q, et al. Zero-shot learning enables instant denoising and "
    "super-resolution in optical fluorescence microscopy. Nat Commun 15, 4180 (2024)."
)
CITATION_DOI = "10.1038/s41467-024-48575-9"


def scale_range(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """bioimage.io's ``scale_range`` over the spatial axes of a ``[1, 1, Y, X]`` tensor."""
    lo, hi = np.percentile(x, [low, high])
    return ((x - lo) / (hi - lo + EPS)).astype(np.float32)


def minimum_input_size(metadata: ModelMetadata) -> int:
    """Smallest valid input size: a multiple of the pooling size leaving output after the halo."""
    step = metadata.size_multiple[-1]
    return step * (-(-(2 * metadata.halo[-1] + step) // step))


def write_package(
    model_path: str | Path,
    output: str | Path,
    test_image: np.ndarray,
    name: str | None = None,
) -> None:
    """Write the bioimage.io package (a ``.zip``) of an exported 2D zsdeconvnet model.

    Parameters
    ----------
    model_path : path-like
        ONNX model written by ``zsdeconvnet export`` (fp32).
    output : path-like
        The package to write (atomically).
    test_image : numpy.ndarray
        A ``YX`` frame of training data, raw intensities (its centre, at least the model's
        minimum input size, becomes the test input).
    name : str, optional
        Model name (default: from the file name).

    Raises
    ------
    InputError
        For 3D models. (A test image smaller than the model's minimum input is mirrored up to
        it.)
    """
    try:
        from bioimageio.spec import save_bioimageio_package
        from bioimageio.spec.model import v0_5 as bio
    except ImportError:
        raise InputError(
            "bioimage.io export needs bioimageio.spec: pip install 'zsdeconvnet[bioimageio]'"
        ) from None
    model_path = Path(model_path)
    proto = onnx.load(str(model_path))
    metadata = ModelMetadata.from_props({p.key: p.value for p in proto.metadata_props})
    if metadata.ndim != 2:
        raise InputError("bioimage.io export is available for 2D models only")
    minimum = minimum_input_size(metadata)
    step = metadata.size_multiple[-1]
    size = max(minimum, 256)
    size = minimum + step * (-(-(size - minimum) // step))
    test_image = np.asarray(test_image, np.float32)
    short = [max(0, size - n) for n in test_image.shape]
    if any(short):  # a small training image: mirror it up to a valid test size
        test_image = np.pad(test_image, [(k // 2, k - k // 2) for k in short], mode="symmetric")
    y0, x0 = ((n - size) // 2 for n in test_image.shape)
    raw = test_image[y0 : y0 + size, x0 : x0 + size][None, None].copy()
    norm = metadata.normalization
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    outputs = session.run(list(OUTPUT_NAMES), {INPUT_NAME: scale_range(raw, norm.low, norm.high)})

    nm = metadata.input_pixel_size_nm or (1000.0, 1000.0)
    out_nm = metadata.output_pixel_size_nm or tuple(
        v / s for v, s in zip(nm, metadata.output_scale)
    )
    unit = "nanometer" if metadata.input_pixel_size_nm else None
    tid = bio.TensorId(INPUT_NAME)
    name = name or model_path.stem

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        np.save(folder / "test_input.npy", raw)
        for key, value in zip(OUTPUT_NAMES, outputs):
            np.save(folder / f"test_{key}.npy", value.astype(np.float32))
        _cover(raw[0, 0], outputs[1][0, 0], folder / "cover.png")
        (folder / "README.md").write_text(_readme(name, metadata))

        def space_in(axis: str, k: int):
            return bio.SpaceInputAxis(
                id=bio.AxisId(axis),
                size=bio.ParameterizedSize(min=minimum, step=step),
                scale=nm[k] if unit else 1.0,
                unit=unit,
            )

        def space_out(axis: str, k: int, factor: int):
            return bio.SpaceOutputAxisWithHalo(
                id=bio.AxisId(axis),
                size=bio.SizeReference(tensor_id=tid, axis_id=bio.AxisId(axis)),
                halo=metadata.halo[k] * factor,
                scale=(out_nm[k] if factor > 1 else nm[k]) if unit else 1.0 / factor,
                unit=unit,
            )

        channel = bio.ChannelAxis(channel_names=[bio.Identifier("fluorescence")])
        inputs = [
            bio.InputTensorDescr(
                id=tid,
                axes=[bio.BatchAxis(), channel, space_in("y", 0), space_in("x", 1)],
                test_tensor=bio.FileDescr(source=folder / "test_input.npy"),
                preprocessing=[
                    bio.ScaleRangeDescr(
                        kwargs=bio.ScaleRangeKwargs(
                            axes=(bio.AxisId("y"), bio.AxisId("x")),
                            min_percentile=norm.low,
                            max_percentile=norm.high,
                            eps=EPS,
                        )
                    )
                ],
                description="raw camera image (ADU), normalised by percentiles",
            )
        ]
        outputs_descr = [
            bio.OutputTensorDescr(
                id=bio.TensorId(key),
                axes=[
                    bio.BatchAxis(),
                    channel,
                    space_out("y", 0, factor),
                    space_out("x", 1, factor),
                ],
                test_tensor=bio.FileDescr(source=folder / f"test_{key}.npy"),
                description=text,
            )
            for key, factor, text in (
                ("denoised", 1, "stage 1: denoised, camera grid, normalised domain"),
                ("deconvolved", metadata.output_scale[-1], "stage 2: deconvolved, 2x grid"),
            )
        ]
        descr = bio.ModelDescr(
            name=name,
            description="ZS-DeconvNet: zero-shot denoising and super-resolution, trained by "
            "zsdeconvnet on the image it restores",
            authors=[bio.Author(name="zsdeconvnet developers")],
            cite=[bio.CiteEntry(text=CITATION, doi=bio.Doi(CITATION_DOI))],
            license=bio.LicenseId("BSD-3-Clause"),
            documentation=bio.FileDescr(source=folder / "README.md"),
            covers=[bio.FileDescr(source=folder / "cover.png")],
            tags=["zero-shot", "deconvolution", "denoising", "super-resolution", "fluorescence"],
            inputs=inputs,
            outputs=outputs_descr,
            weights=bio.WeightsDescr(
                onnx=bio.OnnxWeightsDescr(
                    source=model_path, opset_version=_opset(proto), authors=None
                )
            ),
            config={"zsdeconvnet": json.loads(json.dumps(metadata.to_props()))},
        )
        with atomic_output(Path(output)) as tmp_zip:
            save_bioimageio_package(descr, output_path=tmp_zip)


def _opset(proto: onnx.ModelProto) -> int:
    return max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def _cover(raw: np.ndarray, deconvolved: np.ndarray, path: Path) -> None:
    """A 2:1 PNG: input | deconvolved (each contrast-stretched), input upsampled to match."""
    from PIL import Image

    def stretch(a: np.ndarray) -> np.ndarray:
        lo, hi = np.percentile(a, [0.5, 99.8])
        return (np.clip((a - lo) / max(hi - lo, 1e-12), 0, 1) * 255).astype(np.uint8)

    factor = deconvolved.shape[0] // raw.shape[0]
    left = np.kron(stretch(raw), np.ones((factor, factor), np.uint8))
    Image.fromarray(np.hstack([left, stretch(deconvolved)])).save(path)


def _readme(name: str, metadata: ModelMetadata) -> str:
    training = metadata.training
    return f"""# {name}

ZS-DeconvNet model trained by [zsdeconvnet](https://pypi.org/project/zsdeconvnet/) on the
noisy image it restores (zero-shot). Input: one raw 2D fluorescence image; outputs: the
denoised image (stage 1) and the deconvolved image on a {metadata.output_scale[-1]}x finer grid.

- pixel size (nm): input {metadata.input_pixel_size_nm}, output {metadata.output_pixel_size_nm}
- halo (input px): {metadata.halo[-1]}; input sizes are multiples of {metadata.size_multiple[-1]}
- normalisation: percentiles {metadata.normalization.low}-{metadata.normalization.high}
- PSF: {metadata.psf}
- training: preset {training.get("preset")}, {training.get("iterations")} iterations

Outputs are in the normalised domain. `zsdeconvnet predict` runs the same ONNX file with
whole-frame normalisation and exact tiling, and maps the outputs back to input intensities.

# Validation

The test tensors come from the training image; the expected outputs were computed by
onnxruntime from the test input normalised as this package's `scale_range` step does. The
method's quality against Richardson-Lucy on simulated data with ground truth is measured by
zsdeconvnet's `benchmarks/quality.py` (see its `benchmarks/RESULTS.md`). A zero-shot model is
trained for one microscope, structure and noise level: check it on your own data.

Cite: {CITATION} doi:{CITATION_DOI}
"""
