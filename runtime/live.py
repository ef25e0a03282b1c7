"""Live restoration of a stream of frames: a worker thread with a bounded policy.

The acquisition side calls :meth:`LiveRestorer.submit` with each frame as it arrives; the
frame is copied and queued, and a worker thread restores queued frames with a
:class:`~zsdeconvnet.runtime.restorer.Restorer` and hands each result to ``on_restored``.
What happens when restoration is slower than acquisition is the caller's choice
(:data:`POLICIES`):

``queue`` (default)
    Every frame is queued, none is dropped, ``submit`` never waits: the backlog grows and is
    worked off after the acquisition (its largest size is reported).
``drop``
    At most ``max_queue`` frames wait; a frame arriving to a full queue is not restored
    (counted in :attr:`LiveSummary.dropped`). For live previews.
``block``
    At most ``max_queue`` frames wait; ``submit`` waits for room (the acquisition slows to the
    restoration's pace).

Raw frames are never the restorer's to lose: the caller writes them before or after
``submit`` whatever the policy (the pymmcore-plus recipe, :mod:`zsdeconvnet.runtime.mda`, does).
Numpy and the standard library only.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .restorer import Restoration, Restorer

POLICIES = ("queue", "drop", "block")


@dataclass
class LiveSummary:
    """What a live run did (times in ms).

    Attributes
    ----------
    acquired, restored, dropped : int
        Frames submitted, restored, and not restored (``drop`` policy only).
    latency_ms : list of float
        Per restored frame: from ``submit`` to the end of its restoration.
    restore_ms : list of float
        Per restored frame: the restoration alone.
    submit_ms : list of float
        Per frame: how long ``submit`` held the acquisition (copy and queueing).
    max_backlog : int
        Most frames waiting at once.
    errors : list of str
        Frames that could not be restored (a constant frame, NaN pixels): index and reason.
    """

    acquired: int = 0
    restored: int = 0
    dropped: int = 0
    latency_ms: list[float] = field(default_factory=list)
    restore_ms: list[float] = field(default_factory=list)
    submit_ms: list[float] = field(default_factory=list)
    max_backlog: int = 0
    errors: list[str] = field(default_factory=list)

    def percentile(self, values: list[float], q: float) -> float:
        return float(np.percentile(values, q)) if values else float("nan")

    def line(self) -> str:
        """One line for the end of a run."""
        return (
            f"frames acquired {self.acquired}, restored {self.restored}, dropped "
            f"{self.dropped}; latency p50 {self.percentile(self.latency_ms, 50):.0f} ms, p99 "
            f"{self.percentile(self.latency_ms, 99):.0f} ms; restoration "
            f"{self.percentile(self.restore_ms, 50):.0f} ms per frame (median); acquisition "
            f"held at most {max(self.submit_ms, default=0):.1f} ms per frame; largest backlog "
            f"{self.max_backlog}" + (f"; {len(self.errors)} frame(s) failed" if self.errors else "")
        )


class LiveRestorer:
    """Restore submitted frames in a worker thread.

    Parameters
    ----------
    restorer : Restorer
        The loaded model.
    on_restored : callable
        ``on_restored(key, restoration)``, called in the worker thread for each restored
        frame, in submission order (``key`` is what ``submit`` was given). The restoration's
        arrays are reused for the next frame: copy or write them out before returning.
    policy : str
        One of :data:`POLICIES`.
    max_queue : int
        Frames that may wait under ``drop`` and ``block``.
    pixel_size_nm : tuple of float, optional
        The frames' pixel size (nm), passed to :meth:`Restorer.restore`.
    """

    def __init__(
        self,
        restorer: Restorer,
        on_restored: Callable[[object, Restoration], None],
        policy: str = "queue",
        max_queue: int = 8,
        pixel_size_nm: tuple[float, ...] | None = None,
    ):
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}; choose one of {POLICIES}")
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self.restorer = restorer
        self.on_restored = on_restored
        self.policy = policy
        self.pixel_size_nm = pixel_size_nm
        self.summary = LiveSummary()
        self._queue: queue.Queue = queue.Queue(maxsize=0 if policy == "queue" else max_queue)
        self._out: Restoration | None = None
        self._failure: BaseException | None = None
        self._worker = threading.Thread(target=self._work, name="zsdeconvnet-live", daemon=True)
        self._worker.start()

    def submit(self, key: object, frame: np.ndarray, copy: bool = True) -> bool:
        """Queue a copy of ``frame`` for restoration; returns False when it was dropped.

        ``copy=False`` queues ``frame`` itself: the caller promises not to change it.

        Raises
        ------
        RuntimeError
            When the worker has died (its error is chained).
        """
        start = time.perf_counter()
        if self._failure is not None:
            raise RuntimeError("live restoration stopped") from self._failure
        self.summary.acquired += 1
        item = (key, np.array(frame, copy=True) if copy else frame, start)
        queued = True
        if self.policy == "drop":
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                self.summary.dropped += 1
                queued = False
        else:
            self._queue.put(item)  # blocks only under "block", when full
        self.summary.max_backlog = max(self.summary.max_backlog, self._queue.qsize())
        self.summary.submit_ms.append((time.perf_counter() - start) * 1e3)
        return queued

    def close(self, timeout: float | None = None) -> LiveSummary:
        """Wait until every queued frame is restored (or ``timeout`` s), stop the worker and
        return the summary."""
        if self._worker.is_alive():
            self._queue.put(None)
            self._worker.join(timeout)
        if self._failure is not None:
            raise RuntimeError("live restoration stopped") from self._failure
        return self.summary

    def _work(self) -> None:
        from .errors import InputError

        while True:
            item = self._queue.get()
            if item is None:
                return
            key, frame, submitted = item
            start = time.perf_counter()
            try:
                out = (
                    self._out
                    if self._out is not None and (self._out.denoised.shape == frame.shape)
                    else None
                )
                self._out = self.restorer.restore(frame, self.pixel_size_nm, out=out)
                done = time.perf_counter()
                self.on_restored(key, self._out)
            except InputError as err:  # this frame cannot be restored; the stream goes on
                self.summary.errors.append(f"{key}: {err}")
                continue
            except BaseException as err:  # a writer failed: stop, and say so at the next submit
                self._failure = err
                return
            self.summary.restored += 1
            self.summary.restore_ms.append((done - start) * 1e3)
            self.summary.latency_ms.append((done - submitted) * 1e3)
