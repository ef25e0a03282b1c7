"""Live restoration inside a pymmcore-plus acquisition (MDA), written beside the raw data.

::

    from pymmcore_plus import CMMCorePlus
    from zsdeconvnet.runtime.mda import MDARestoration

    core = CMMCorePlus(); core.loadSystemConfiguration()
    with MDARestoration(core, "cell.onnx", "run1/") as live:    # subscribes to core.mda
        core.mda.run(sequence)                                  # a useq.MDASequence
    print(live.summary.line())

Every frame the engine emits is copied in the acquisition thread and queued twice: to a raw
writer thread (an unbounded queue: no raw frame is ever lost) that fills ``run1/raw.zarr`` (the
camera's data type), and to a :class:`~zsdeconvnet.runtime.live.LiveRestorer`
whose worker writes the deconvolved frame to ``run1/deconvolved.zarr`` (2x finer in y and x,
half the pixel size) and, with ``denoised=True``, ``run1/denoised.zarr``. Both are OME-Zarr
(NGFF 0.5, axes ``tyx``: one entry per MDA event in acquisition order, pixel sizes in the
metadata, a pyramid written at the end), and ``run1/summary.json`` holds the frame counts,
latencies and each frame's MDA index. 2D models only (an MDA frame is one camera image).

Needs ``pip install 'zsdeconvnet[acquisition]'`` (pymmcore-plus, zarr, ome-zarr); the module
imports neither until it is used.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from pathlib import Path

import numpy as np

from .errors import InputError, describe
from .io import atomic_output
from .live import LiveRestorer, LiveSummary
from .restorer import Restoration, Restorer
from .zarr_io import create_zarr_output, downsample_chunk, level_chunks


class MDARestoration:
    """Restore each frame of the MDA runs of ``core`` while they acquire.

    Parameters
    ----------
    core : pymmcore_plus.CMMCorePlus
        The core whose ``mda`` runner emits the frames (``UniMMCore`` too).
    model : str, os.PathLike or Restorer
        The 2D model file (or a loaded :class:`Restorer`).
    output : str or os.PathLike
        Folder for ``raw.zarr``, ``deconvolved.zarr`` (and ``denoised.zarr``), ``summary.json``;
        it must not hold an earlier run's output.
    policy : str
        What to do when restoration is slower than acquisition (``runtime.live.POLICIES``):
        ``queue`` (default: restore every frame, never hold the acquisition), ``drop``,
        ``block``.
    max_queue : int
        Frames that may wait under ``drop`` and ``block``.
    denoised : bool
        Also write stage 1's output.
    provider, tile : str, int
        As for :class:`Restorer`.
    """

    def __init__(
        self,
        core,
        model: str | os.PathLike | Restorer,
        output: str | os.PathLike,
        policy: str = "queue",
        max_queue: int = 8,
        denoised: bool = False,
        provider: str = "cpu",
        tile: int | None = 512,
    ):
        self.core = core
        self.restorer = model if isinstance(model, Restorer) else Restorer(model, provider, tile)
        if self.restorer.metadata.ndim != 2:
            raise InputError("live MDA restoration takes a 2D model (one camera frame at a time)")
        self.output = Path(output)
        for name in ("raw.zarr", "deconvolved.zarr", "denoised.zarr", "summary.json"):
            if (self.output / name).exists():
                raise InputError(
                    f"{describe(self.output / name)} exists; give a new output folder for "
                    "each acquisition"
                )
        self.policy, self.max_queue, self.want_denoised = policy, max_queue, denoised
        self.summary = LiveSummary()
        self._live: LiveRestorer | None = None
        self._events: list[dict] = []
        self._sizes: int = 0
        self._outputs: dict = {}
        self._arrays: dict = {}  # the level-0 zarr arrays, opened once per run
        self._held_ms: list[float] = []  # per frame: how long our callback held the engine
        self._pixel_nm: float | None = None
        self._connected = False

    # -- subscription ------------------------------------------------------------------------

    def __enter__(self) -> MDARestoration:
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.disconnect()

    def connect(self) -> None:
        """Subscribe to the core's MDA events."""
        events = self.core.mda.events
        events.sequenceStarted.connect(self._started)
        events.frameReady.connect(self._frame)
        events.sequenceFinished.connect(self._finished)
        self._connected = True

    def disconnect(self) -> None:
        """Unsubscribe (a run in progress is finished first)."""
        if not self._connected:
            return
        events = self.core.mda.events
        events.sequenceStarted.disconnect(self._started)
        events.frameReady.disconnect(self._frame)
        events.sequenceFinished.disconnect(self._finished)
        self._connected = False

    # -- the engine's callbacks --------------------------------------------------------------

    def _started(self, sequence, *args) -> None:
        self._sizes = max(1, sum(1 for _ in sequence))
        self._events, self._outputs, self._arrays, self._held_ms = [], {}, {}, []
        um = float(self.core.getPixelSizeUm() or 0.0)
        meta_px = self.restorer.metadata.input_pixel_size_nm
        self._pixel_nm = um * 1e3 if um > 0 else (meta_px[-1] if meta_px else None)
        self._live = LiveRestorer(
            self.restorer,
            self._restored,
            self.policy,
            self.max_queue,
            None if self._pixel_nm is None else (self._pixel_nm,) * 2,
        )
        # the outputs are made now, before the first frame, so no frame waits for them
        shape = (int(self.core.getImageHeight()), int(self.core.getImageWidth()))
        depth = int(self.core.getBytesPerPixel() or 2)
        self._camera_dtype = {1: np.uint8, 2: np.uint16, 4: np.uint32}.get(depth, np.float32)
        if min(shape) > 0:
            self._create_outputs(shape)
        self._raw_queue: queue.Queue = queue.Queue()
        self._raw_failure: BaseException | None = None
        self._raw_writer = threading.Thread(target=self._write_raw, name="zsdeconvnet-raw")
        self._raw_writer.start()

    def _frame(self, image: np.ndarray, event, *args) -> None:
        """In the acquisition thread: write the raw frame, queue its restoration."""
        start = time.perf_counter()
        self._store(image, event)
        self._held_ms.append((time.perf_counter() - start) * 1e3)

    def _store(self, image: np.ndarray, event) -> None:
        index = len(self._events)
        if not self._outputs:  # the core did not know the frame size in advance
            self._camera_dtype = np.asarray(image).dtype
            self._create_outputs(np.shape(image))
        if self._outputs["raw"].levels[0][1:] != np.shape(image):
            raise InputError(
                f"the camera gave a {np.shape(image)} frame after announcing "
                f"{self._outputs['raw'].levels[0][1:]}; keep the ROI fixed during an acquisition"
            )
        if index >= self._sizes:  # more frames than the sequence announced: not kept
            return
        frame = np.array(image, copy=True)  # the engine may reuse its buffer
        self._raw_queue.put((index, frame))  # unbounded: a raw frame is never dropped
        self._events.append({k: int(v) for k, v in dict(event.index).items()})
        self._live.submit(index, frame, copy=False)

    def _write_raw(self) -> None:
        """The raw writer thread: raw frames to ``raw.zarr`` in arrival order, so the
        acquisition thread only copies and queues (a 2048 x 2048 chunk written in it held the
        engine 0.3 s per frame)."""
        while True:
            item = self._raw_queue.get()
            if item is None:
                return
            index, frame = item
            try:
                self._arrays["raw"][index] = frame
            except BaseException as err:  # reported at the end of the run
                self._raw_failure = err
                return

    def _restored(self, index: int, result: Restoration) -> None:
        """In the worker thread: write the restored frame."""
        self._arrays["deconvolved"][index] = result.deconvolved
        if self.want_denoised:
            self._arrays["denoised"][index] = result.denoised

    def _finished(self, sequence, *args) -> None:
        """Drain the queue, finish the zarr outputs (pyramids) and write the summary."""
        if self._live is None:
            return
        start = time.perf_counter()
        self._raw_queue.put(None)
        self.summary = self._live.close()
        self._raw_writer.join()
        drain_s = time.perf_counter() - start
        if self._raw_failure is not None:
            raise RuntimeError("writing raw frames failed") from self._raw_failure
        for out in self._outputs.values():
            for level in range(1, len(out.levels)):
                for box in level_chunks(out, level):
                    downsample_chunk(out, level, box)
            out.finish()
        record = {
            "frames_acquired": self.summary.acquired,
            "frames_restored": self.summary.restored,
            "frames_dropped": self.summary.dropped,
            "policy": self.policy,
            "latency_ms_p50": self.summary.percentile(self.summary.latency_ms, 50),
            "latency_ms_p99": self.summary.percentile(self.summary.latency_ms, 99),
            "restore_ms_p50": self.summary.percentile(self.summary.restore_ms, 50),
            "acquisition_held_ms_max": max(self._held_ms, default=0.0),
            "acquisition_held_ms_p50": float(np.median(self._held_ms)) if self._held_ms else 0.0,
            "max_backlog": self.summary.max_backlog,
            "drain_after_acquisition_s": drain_s,
            "errors": self.summary.errors,
            "pixel_size_nm": self._pixel_nm,
            "events": self._events,
        }
        with atomic_output(self.output / "summary.json") as tmp:
            tmp.write_text(json.dumps(record, indent=1))
        self._live = None

    def _create_outputs(self, shape: tuple[int, ...]) -> None:
        if len(shape) != 2:
            raise InputError(f"the camera gives frames of shape {shape}; a 2D model needs YX")
        self.output.mkdir(parents=True, exist_ok=True)
        px = self._pixel_nm or 1e3
        names = ["raw", "deconvolved"] + (["denoised"] if self.want_denoised else [])
        for name in names:
            factor = 2 if name == "deconvolved" else 1
            dtype = np.dtype(self._camera_dtype).name if name == "raw" else "float32"
            h, w = shape[0] * factor, shape[1] * factor
            self._outputs[name] = create_zarr_output(
                self.output / f"{name}.zarr",
                (self._sizes, h, w),
                (1, h, w),
                "TYX",
                {"Y": px / factor, "X": px / factor},
                {"Y": -0.5, "X": -0.5} if factor == 2 else {},  # as predict's zarr output
                {"model": str(self.restorer.model.path), "output": name},
                resume=False,
                name=name,
                dtype=dtype,
            )
            self._arrays[name] = self._outputs[name].array()
