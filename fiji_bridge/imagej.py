"""ImageJ images <-> numpy, in process, through scyjava/JPype (ImageJ 1.x classes).

Works wherever an ImageJ 1.x ``ij.jar`` is on the JVM's class path: inside Fiji started by
pyimagej (``imagej.init``), or a plain ``ij.jar`` started with :func:`start_jvm`. Pixel sizes
travel both ways through ImageJ's ``Calibration`` (micrometres there, nm here). Arrays are
``YX``, ``ZYX`` or ``TYX`` float32.
"""

from __future__ import annotations

import os

import numpy as np

from ..runtime.errors import InputError

DEBIAN_IJ_JAR = "/usr/share/java/ij.jar"
_NM_PER_UNIT = {
    "nm": 1.0,
    "nanometer": 1.0,
    "um": 1e3,
    "µm": 1e3,
    "micron": 1e3,
    "microns": 1e3,
    "micrometer": 1e3,
    "mm": 1e6,
}


def start_jvm(ij_jar: str | os.PathLike | None = None) -> None:
    """Start a JVM with ImageJ 1.x on the class path (no-op when one is running)."""
    import scyjava

    if scyjava.jvm_started():
        return
    jar = str(ij_jar or DEBIAN_IJ_JAR)
    if not os.path.isfile(jar):
        raise InputError(f"ImageJ jar '{jar}' not found; install imagej or give its ij.jar")
    scyjava.config.set_java_constraints(fetch="never")  # use the system Java; never download
    scyjava.config.add_classpath(jar)
    scyjava.config.add_option("-Djava.awt.headless=true")
    scyjava.start_jvm()


def to_imageplus(
    array: np.ndarray,
    axes: str = "YX",
    pixel_size_nm: dict | None = None,
    title: str = "zsdeconvnet",
):
    """A float32 ``ij.ImagePlus`` (hyperstack for 3D) with its calibration."""
    import jpype
    from scyjava import jimport

    ImagePlus = jimport("ij.ImagePlus")
    ImageStack = jimport("ij.ImageStack")
    FloatProcessor = jimport("ij.process.FloatProcessor")
    data = np.ascontiguousarray(array, dtype=np.float32)
    if data.ndim == 2:
        data, axes = data[None], "Z" + axes
    if data.ndim != 3 or axes[-2:] != "YX" or axes[0] not in "ZTC":
        raise InputError(f"cannot convert an array with axes {axes!r} to ImageJ")
    height, width = data.shape[1:]
    stack = ImageStack(width, height)
    for plane in data:
        stack.addSlice(FloatProcessor(width, height, jpype.JArray(jpype.JFloat)(plane.ravel())))
    imp = ImagePlus(title, stack)
    n = data.shape[0]
    imp.setDimensions(
        n if axes[0] == "C" else 1, n if axes[0] == "Z" else 1, n if axes[0] == "T" else 1
    )
    sizes = pixel_size_nm or {}
    if "X" in sizes:
        cal = imp.getCalibration()
        cal.setUnit("micron")
        cal.pixelWidth = sizes["X"] / 1e3
        cal.pixelHeight = sizes.get("Y", sizes["X"]) / 1e3
        if "Z" in sizes:
            cal.pixelDepth = sizes["Z"] / 1e3
    return imp


def from_imageplus(imp) -> tuple[np.ndarray, str, dict[str, float]]:
    """``(array, axes, pixel_size_nm)`` from an ``ij.ImagePlus`` (any pixel type -> float32)."""
    stack = imp.getStack()
    planes = []
    for k in range(1, stack.getSize() + 1):
        processor = stack.getProcessor(k).convertToFloatProcessor()
        pixels = np.array(processor.getPixels(), dtype=np.float32)
        planes.append(pixels.reshape(processor.getHeight(), processor.getWidth()))
    data = np.stack(planes)
    c, z, t = imp.getNChannels(), imp.getNSlices(), imp.getNFrames()
    axes = "".join(a for a, n in (("T", t), ("Z", z), ("C", c)) if n > 1)
    if len(axes) > 1:
        raise InputError("only single-channel images with one of T or Z are supported here")
    data = data[0] if not axes else data
    cal = imp.getCalibration()
    factor = _NM_PER_UNIT.get(str(cal.getUnit()).lower())
    sizes: dict[str, float] = {}
    if factor:
        sizes = {"X": cal.pixelWidth * factor, "Y": cal.pixelHeight * factor}
        if z > 1:
            sizes["Z"] = cal.pixelDepth * factor
    return data, axes + "YX", sizes


def predict_imageplus(
    imp, model_path: str | os.PathLike, tile: int | None = 512, provider: str = "auto"
):
    """Restore an ImagePlus with a model file, in process: ``(deconvolved, denoised)``."""
    from ..runtime.model import Model
    from ..runtime.predict import PredictOptions, Predictor

    data, axes, sizes = from_imageplus(imp)
    predictor = Predictor(
        Model(model_path, provider=provider), PredictOptions(tile=tile, progress=False)
    )
    frames = data.reshape(-1, *data.shape[-predictor.ndim :])
    results = [predictor.predict_array(f) for f in frames]
    dec = np.stack([r[1] for r in results]).reshape(
        *data.shape[: data.ndim - predictor.ndim], *results[0][1].shape
    )
    den = np.stack([r[0] for r in results]).reshape(data.shape)
    scale = predictor.scale
    sr_sizes = dict(sizes)
    for letter, factor in zip(axes[-predictor.ndim :], scale):
        if letter in sr_sizes:
            sr_sizes[letter] /= factor
    title = str(imp.getTitle())
    return (
        to_imageplus(dec, axes, sr_sizes, f"{title}_deconvolved"),
        to_imageplus(den, axes, sizes, f"{title}_denoised"),
    )
