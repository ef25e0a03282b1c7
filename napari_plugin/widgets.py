"""napari widgets: restore an image layer with a model file, train a model on an image layer.

Both run their work in a worker thread (the viewer stays responsive), show progress, and can be
cancelled. Results are layers with the right scale: the deconvolved layer has the model's
output pixel size (half the input's in y and x) and is shifted so that pixel centres line up.
Errors are the project's one-line messages, shown in the widget.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)
from napari.layers import Image
from napari.qt.threading import create_worker
from qtpy.QtCore import QObject, Signal

from ..runtime.errors import InputError
from ..runtime.model import PROVIDER_CHOICES, Model
from ..runtime.restorer import Restorer


def sr_placement(
    scale: tuple[float, ...], translate: tuple[float, ...], factors: tuple[int, ...]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Scale and translate of an output layer ``factors`` times finer on the trailing axes.

    Output pixel ``i`` is centred at input coordinate ``(i + 0.5) / f - 0.5``.
    """
    lead = len(scale) - len(factors)
    new_scale = list(scale)
    new_translate = list(translate)
    for k, f in enumerate(factors):
        axis = lead + k
        new_scale[axis] = scale[axis] / f
        new_translate[axis] = translate[axis] + scale[axis] * (1 / f - 1) / 2
    return tuple(new_scale), tuple(new_translate)


class _Actions:
    """The run / cancel / progress / status row both widgets end with."""

    def __init__(self, run_text: str):
        self.run_button = PushButton(text=run_text)
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="progress", min=0, max=1, value=0)
        self.status = Label(value="")

    def widgets(self) -> list:
        return [self.run_button, self.cancel_button, self.progress, self.status]


class _LayerChoice(ComboBox):
    """Image layers of the viewer, kept current as layers come and go."""

    def __init__(self, viewer, label: str):
        super().__init__(label=label, choices=self._images)
        self._viewer = viewer
        viewer.layers.events.inserted.connect(self.reset_choices)
        viewer.layers.events.removed.connect(self.reset_choices)
        self.reset_choices()

    def _images(self, _widget=None):
        viewer = getattr(self, "_viewer", None)
        if viewer is None:
            return []
        return [(layer.name, layer) for layer in viewer.layers if isinstance(layer, Image)]


class PredictWidget(Container):
    """Restore the chosen image layer with a zsdeconvnet ONNX model.

    Adds ``<name> denoised`` and ``<name> deconvolved`` layers. A layer with more axes than the
    model (a time series, channels) is restored plane by plane (2D models) or stack by stack.
    """

    def __init__(self, viewer):
        super().__init__()
        self._viewer = viewer
        self.image = _LayerChoice(viewer, "image")
        self.model = FileEdit(label="model", filter="*.onnx", mode="r")
        self.provider = ComboBox(label="provider", choices=list(PROVIDER_CHOICES), value="auto")
        self.tile = SpinBox(label="tile (px, 0 = whole)", value=512, min=0, max=16384, step=64)
        actions = _Actions("Restore")
        self.run_button, self.cancel_button = actions.run_button, actions.cancel_button
        self.progress, self.status = actions.progress, actions.status
        self.extend([self.image, self.model, self.provider, self.tile, *actions.widgets()])
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.worker = None

    def run(self) -> None:
        """Start restoring in a worker thread."""
        layer = self.image.value
        if layer is None:
            self.status.value = "choose an image layer"
            return
        try:
            model = Model(Path(self.model.value), provider=self.provider.value)
            nd = model.metadata.ndim
            data = np.asarray(layer.data)
            if data.ndim < nd:
                raise InputError(f"layer {layer.name!r} has {data.ndim} axes; the model is {nd}D")
        except InputError as err:
            self.status.value = str(err)
            return
        restorer = Restorer(model, tile=self.tile.value or None)
        frames = data.reshape(-1, *data.shape[-nd:])
        self.progress.max = len(frames)
        self.progress.value = 0
        self.status.value = f"restoring {len(frames)} frame(s) on {model.active_provider}"
        self.worker = create_worker(_restore, restorer, frames, _start_thread=False)
        self.worker.yielded.connect(lambda done: setattr(self.progress, "value", done))
        self.worker.returned.connect(
            lambda result: self._add_layers(layer, data.shape, model.metadata, result)
        )
        self.worker.errored.connect(self._failed)
        self.worker.finished.connect(self._finished)
        self.worker.aborted.connect(lambda: setattr(self.status, "value", "cancelled"))
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.worker.start()

    def cancel(self) -> None:
        """Stop after the frame being restored."""
        if self.worker is not None:
            self.worker.quit()

    def _add_layers(self, layer, shape, metadata, result) -> None:
        if isinstance(result, str):  # the project's one-line error
            self.status.value = result
            return
        denoised, deconvolved = result
        nd = metadata.ndim
        lead = shape[:-nd]
        self._viewer.add_image(
            denoised.reshape(shape),
            name=f"{layer.name} denoised",
            scale=layer.scale,
            translate=layer.translate,
        )
        scale, translate = sr_placement(
            tuple(layer.scale), tuple(layer.translate), tuple(metadata.output_scale)
        )
        self._viewer.add_image(
            deconvolved.reshape(*lead, *deconvolved.shape[-nd:]),
            name=f"{layer.name} deconvolved",
            scale=scale,
            translate=translate,
        )
        self.status.value = f"restored {layer.name}"

    def _failed(self, err: Exception) -> None:
        self.status.value = str(err) if isinstance(err, InputError) else f"failed: {err}"

    def _finished(self) -> None:
        self.run_button.enabled, self.cancel_button.enabled = True, False


def _restore(restorer: Restorer, frames: np.ndarray):
    """Generator run in the worker: yields frames done, returns (denoised, deconvolved).

    Expected failures (the project's ``InputError``) come back as their message, so only
    real bugs reach napari's error handler.
    """
    denoised = deconvolved = None
    for k, frame in enumerate(frames):
        try:
            result = restorer.restore(frame)  # the in-process API (runtime/restorer.py)
        except InputError as err:
            return str(err)
        den, dec = result.denoised, result.deconvolved
        if deconvolved is None:
            denoised = np.empty((len(frames), *den.shape), np.float32)
            deconvolved = np.empty((len(frames), *dec.shape), np.float32)
        denoised[k], deconvolved[k] = den, dec
        yield k + 1
    return denoised, deconvolved


class _Progress(QObject):
    changed = Signal(int, int)


class TrainWidget(Container):
    """Train a 2D model on the chosen image layer (one image or a time series) with a PSF file.

    The layer is saved into the run folder beside the model (``<model>_training/image.tif``),
    so the run is an ordinary ``zsdeconvnet train`` run: ``config.json``, checkpoints, loss
    curve; a cancelled run can be resumed with ``zsdeconvnet train --resume``.
    """

    def __init__(self, viewer):
        super().__init__()
        self._viewer = viewer
        self.image = _LayerChoice(viewer, "image")
        self.psf = FileEdit(label="PSF", filter="*.tif *.tiff", mode="r")
        self.output = FileEdit(label="model to write", filter="*.onnx", mode="w")
        self.preset = ComboBox(label="preset", choices=["fast", "paper"], value="fast")
        self.iterations = SpinBox(label="iterations (0 = preset)", value=0, min=0, max=10**6)
        self.pixel_size = FloatSpinBox(
            label="pixel size nm (0 = PSF's)", value=0.0, min=0.0, max=1e5, step=0.1
        )
        self.device = ComboBox(label="device", choices=["cpu", "cuda"], value="cpu")
        actions = _Actions("Train")
        self.run_button, self.cancel_button = actions.run_button, actions.cancel_button
        self.progress, self.status = actions.progress, actions.status
        fields = [self.image, self.psf, self.output, self.preset, self.iterations]
        self.extend([*fields, self.pixel_size, self.device, *actions.widgets()])
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self._stop = threading.Event()
        self._signal = _Progress()
        self._signal.changed.connect(self._on_progress)
        self.worker = None

    def run(self) -> None:
        """Save the layer into the run folder and start training in a worker thread."""
        from ..runtime.io import write_tiff
        from ..training.config import preset
        from ..training.run import fresh_run_dir

        layer = self.image.value
        try:
            if layer is None:
                raise InputError("choose an image layer")
            output = Path(self.output.value)
            if output.suffix != ".onnx":
                raise InputError("choose where to write the model (.onnx)")
            data = np.asarray(layer.data, np.float32)
            if data.ndim not in (2, 3):
                raise InputError(f"layer {layer.name!r} must be YX or a time series TYX")
            run_dir = output.with_name(output.stem + "_training")
            fresh_run_dir(run_dir, overwrite=False)
            run_dir.mkdir(parents=True, exist_ok=True)
            image_path = run_dir / "image.tif"
            px = self.pixel_size.value or None
            sizes = {"X": px, "Y": px} if px else {}
            write_tiff(image_path, data, "YX" if data.ndim == 2 else "TYX", sizes)
            cfg = preset(
                self.preset.value,
                images=[str(image_path)],
                psf=str(self.psf.value),
                pixel_size_nm=px,
                iterations=self.iterations.value or None,
                device=self.device.value,
            )
        except InputError as err:
            self.status.value = str(err)
            return
        self._stop.clear()
        self.progress.max, self.progress.value = cfg.iterations, 0
        self.status.value = f"training on {layer.name} ({cfg.preset}, {cfg.iterations} it.)"
        self.worker = create_worker(_train, cfg, output, self._callback, _start_thread=False)
        self.worker.returned.connect(lambda message: setattr(self.status, "value", message))
        self.worker.errored.connect(self._failed)
        self.worker.finished.connect(self._finished)
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.worker.start()

    def cancel(self) -> None:
        """Stop at the next step, with a checkpoint to resume from."""
        self._stop.set()

    def _callback(self, iteration: int, total: int) -> bool:
        self._signal.changed.emit(iteration, total)  # queued to the GUI thread
        return not self._stop.is_set()

    def _on_progress(self, iteration: int, total: int) -> None:
        self.progress.max, self.progress.value = total, iteration

    def _failed(self, err: Exception) -> None:
        self.status.value = f"failed: {err}"

    def _finished(self) -> None:
        self.run_button.enabled, self.cancel_button.enabled = True, False


def _train(cfg, output: Path, callback) -> str:
    """Run in the worker: train and export; returns what to tell the user.

    Cancellation and the project's input errors are outcomes, not crashes: they come back as
    the message (a cancelled run keeps its checkpoint for ``zsdeconvnet train --resume``).
    """
    from ..export.checkpoint import export_checkpoint
    from ..training.run import Cancelled, run_training

    try:
        run_training(cfg, output, progress=False, callback=callback, export=export_checkpoint)
    except Cancelled as err:
        return f"cancelled: {err}"
    except InputError as err:
        return str(err)
    return f"wrote {output}"
