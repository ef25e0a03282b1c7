"""The training loop: checkpoints, resume, loss log, plots.

A run's folder holds ``config.json``, ``checkpoint.pt`` (written atomically every
``checkpoint_every`` iterations: weights, optimiser, schedule, both random generators, and a
normalised crop of the training image for the export parity check), ``loss.csv``, ``loss.png``
and ``preview.png`` (raw | denoised | deconvolved). Resuming restores everything, so a killed
and resumed run ends with the same weights as an uninterrupted one with the same seed (on the
same device and thread count).
"""

from __future__ import annotations

import csv
import errno
import logging
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..physics.psf import PSF, crop_psf, resample_psf
from ..runtime.errors import InputError, describe
from ..runtime.io import atomic_output, remove_stale_partials
from .config import TrainConfig
from .data2d import PatchSampler
from .data3d import StackSampler
from .device import pick_device, use_bf16
from .distributed import SINGLE, World, average
from .losses import FFTConvolver, gap_amending_loss, zs_loss
from .pairs_torch import make_pairs, use_torch_pairs
from .prior_init import initial_weights
from .rcan3d import ZSDeconvNet3D
from .schedule import PROBE_STEPS, REMEASURE_AT, budget_iterations, lr_factor
from .unet2d import ZSDeconvNet2D

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
LOSS_COLUMNS = ("iteration", "loss", "denoise", "deconv", "hessian", "lr", "seconds")
PARITY_CROP = 256


def sr_psf(
    psf: PSF, camera_pixel_nm: float, cfg: TrainConfig, z_step_nm: float | None = None
) -> PSF:
    """The PSF on the output grid, cropped to +-4 sigma.

    2D: camera pixel / upsample. 3D: the same in y and x, and twice the raw z step in z (the
    odd/even halves are interleaved, so each half samples z at twice the step).
    """
    target = camera_pixel_nm / cfg.upsample
    if cfg.ndim == 2:
        return crop_psf(resample_psf(psf, (target, target)), cfg.psf_sigmas)
    if z_step_nm is None:
        raise InputError("3D training needs the stack's z step (TIFF metadata or --z-step)")
    return crop_psf(resample_psf(psf, (2 * z_step_nm, target, target)), cfg.psf_sigmas)


class Trainer:
    """Zero-shot training on the given frames.

    Parameters
    ----------
    cfg : TrainConfig
        The configuration (saved in the run folder).
    frames : list of numpy.ndarray
        Noisy ``YX`` frames (ADU).
    psf : PSF
        Checked PSF (any pixel size; resampled here).
    pixel_size_nm : float
        Camera pixel size of the frames.
    run_dir : path-like or None
        Folder for checkpoints, logs and plots; ``None`` keeps everything in memory
        (test-time adaptation, and ranks other than 0 of a distributed run).
    z_step_nm : float, optional
        Stack z step (3D).
    world : World
        This process's rank among data-parallel training processes (default: alone).
    sampler : optional
        A ready training-pair sampler (SIM pairs); default: recorruption (2D) or odd/even
        slices (3D) of ``frames``.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        frames: list[np.ndarray],
        psf: PSF,
        pixel_size_nm: float,
        run_dir: str | Path | None,
        z_step_nm: float | None = None,
        world: World = SINGLE,
        sampler=None,
    ):
        self.cfg = cfg
        self.world = world
        self.shard = world.shard(cfg.batch_size)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.device = pick_device(world.device(cfg.device))
        torch.set_flush_denormal(True)  # denormals made CPU steps 5-25x slower (METHOD.md)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.three_d = cfg.mode == "3d"
        if sampler is None:
            sampler = (StackSampler if self.three_d else PatchSampler)(frames, cfg, self.rng)
        self.sampler = sampler
        self.torch_pairs = isinstance(sampler, PatchSampler) and use_torch_pairs(
            cfg.pair_backend, self.device
        )
        self.pixel_size_nm = pixel_size_nm
        self.z_step_nm = z_step_nm
        self.psf = psf
        self.psf_sr = sr_psf(psf, pixel_size_nm, cfg, z_step_nm)
        if self.three_d:
            self.model = ZSDeconvNet3D.from_config(cfg).to(self.device)
        else:
            # channels_last: faster convolutions on CPU (oneDNN) and on GPUs
            self.model = ZSDeconvNet2D.from_config(cfg).to(self.device)
            self.model = self.model.to(memory_format=torch.channels_last)
        weights = initial_weights(cfg, self.psf_sr.data)
        if weights is not None:
            self.model.load_state_dict(weights)
        # config.json says what was done: auto resolves to prior or scratch
        self.cfg = cfg = cfg.replace(init="scratch" if weights is None else "prior")
        self.net = self.model  # what the loss calls: the model, or its DDP wrapper
        if world.size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.bf16 = use_bf16(cfg.amp, self.device) and not self.three_d
        self.blur = FFTConvolver(torch.from_numpy(self.psf_sr.data)).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        # reads self.cfg at every step: a time budget may fix the iteration count after a few
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda i: lr_factor(self.cfg, i)
        )
        self.iteration = 0
        self.elapsed = 0.0
        self.cancelled = False
        self._checkpoint_s = 0.0  # seconds a checkpoint with plots took (time budget)
        self.psf_sha256 = ""
        self.parity_crop = self._parity_crop(frames[0])
        if self.run_dir is not None:  # only once the inputs were accepted
            self.run_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_partials(self.run_dir)  # what a run killed while writing left behind
            cfg.save(self.run_dir / "config.json")
        for model in self.sampler.noise:
            log.info("noise model: %s", model.describe())
        if self.torch_pairs:
            log.info("training pairs made with torch on %s", self.device)

    def _parity_crop(self, frame: np.ndarray) -> np.ndarray:
        """A normalised central crop of the first frame/stack (export parity, previews)."""
        lo, hi = self.sampler.ranges[0]
        m = self.cfg.size_multiple
        limits = (
            (PARITY_CROP,) * 2 if not self.three_d else (16, PARITY_CROP // 2, PARITY_CROP // 2)
        )
        sizes = [min(limit, n) // m * m for limit, n in zip(limits, frame.shape)]
        box = tuple(slice((n - k) // 2, (n - k) // 2 + k) for n, k in zip(frame.shape, sizes))
        crop = (np.asarray(frame[box], np.float32) - lo) / (hi - lo)
        return crop.astype(np.float32)

    # -- checkpoints -----------------------------------------------------------------------

    def state(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "iteration": self.iteration,
            "elapsed": self.elapsed,
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": self.rng.bit_generator.state,
            "config": self.cfg.to_json(),
            "pixel_size_nm": self.pixel_size_nm,
            "z_step_nm": self.z_step_nm,
            "psf": torch.from_numpy(self.psf.data),
            "psf_pixel_size_nm": list(self.psf.pixel_size_nm),
            "psf_source": self.psf.source,
            "psf_sha256": self.psf_sha256,
            "noise": [[n.background, n.beta2, n.gain] for n in self.sampler.noise],
            "gain_source": self.sampler.noise[0].gain_source if self.sampler.noise else "",
            "parity_crop": torch.from_numpy(self.parity_crop),
        }

    def save_checkpoint(self) -> Path:
        """Write ``checkpoint.pt`` atomically (the previous one stays whole until replaced)."""
        path = self.run_dir / CHECKPOINT
        with atomic_output(path) as tmp:
            try:
                torch.save(self.state(), tmp)
            except RuntimeError as err:  # torch reports a failed write (disk full) this way
                raise OSError(
                    errno.ENOSPC,
                    f"could not write the checkpoint ({err}; disk full or a file-size limit?); "
                    "the previous checkpoint is kept",
                    str(path),
                ) from None
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        state = load_checkpoint(path)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.iteration = int(state["iteration"])
        self.elapsed = float(state["elapsed"])
        torch.set_rng_state(state["torch_rng"])
        self.rng.bit_generator.state = state["numpy_rng"]
        self._truncate_log()
        log.info("resumed %s at iteration %d", path, self.iteration)

    # -- logging -----------------------------------------------------------------------------

    def _truncate_log(self) -> None:
        path = self.run_dir / "loss.csv"
        if not path.exists():
            return
        with path.open() as f:
            rows = [r for r in csv.DictReader(f) if int(r["iteration"]) <= self.iteration]
        with atomic_output(path) as tmp, tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, LOSS_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    def _log_rows(self, rows: list[dict]) -> None:
        path = self.run_dir / "loss.csv"
        new = not path.exists()
        with path.open("a", newline="") as f:
            writer = csv.DictWriter(f, LOSS_COLUMNS)
            if new:
                writer.writeheader()
            writer.writerows(rows)

    # -- the loop ----------------------------------------------------------------------------

    def step(self) -> dict[str, float]:
        """One optimisation step on a fresh batch."""
        self.model.train()
        if self.three_d:
            loss, parts = self._loss_3d()
        else:
            loss, parts = self._loss_2d()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.iteration += 1
        values = torch.stack(list(parts.values())).tolist()  # the step's one wait for the device
        parts = average(dict(zip(parts, values)), self.world, self.device)
        parts["lr"] = self.optimizer.param_groups[0]["lr"]
        return parts

    def _per_sample(self, draw: Callable[[], object]) -> list:
        """``draw()`` once for each sample of this rank's share of the global batch; sample
        ``k`` of iteration ``i`` is drawn from its own stream ``(seed, i, k)``, so it is the
        same however the batch is split."""
        out = []
        for index in self.shard:
            self.sampler.rng = np.random.default_rng((self.cfg.seed, self.iteration, index))
            out.append(draw())
        return out

    def _batch(self) -> tuple[np.ndarray, ...]:
        """This rank's share of the global batch (numpy arrays)."""
        parts = self._per_sample(lambda: self.sampler.batch(1))
        return tuple(np.concatenate(arrays) for arrays in zip(*parts))

    def _pairs_2d(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's 2D (input, target) batch on the device, made by numpy or by torch
        there (``pair_backend``); per-sample random streams (:meth:`_per_sample`)."""
        if not self.torch_pairs:
            x, y = self._batch()
            return torch.from_numpy(x).to(self.device), torch.from_numpy(y).to(self.device)
        draws = self._per_sample(self.sampler.draw)
        return make_pairs(draws, self.cfg.patch_size, self.device)

    def _loss_2d(self):
        cfg = self.cfg
        x, yt = self._pairs_2d()
        pad = cfg.pad_xy
        xt = torch.nn.functional.pad(x, (pad, pad, pad, pad))  # zeros, as the reference
        xt = xt.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            denoised, deconvolved = self.net(xt)
        return zs_loss(
            denoised.float(),
            deconvolved.float(),
            yt,
            self.blur,
            cfg.mu,
            cfg.hessian_weight,
            pad,
            cfg.upsample,
        )

    def _loss_3d(self):
        cfg = self.cfg
        x, y, full, background = self._batch()
        widths = (
            (0, 0),
            (0, 0),
            (cfg.pad_z, cfg.pad_z),
            (cfg.pad_xy, cfg.pad_xy),
            (cfg.pad_xy, cfg.pad_xy),
        )  # blank slices and zero borders, as the reference
        xt = torch.from_numpy(np.pad(x, widths)).to(self.device)
        ft = torch.from_numpy(np.pad(full, widths)).to(self.device)
        yt = torch.from_numpy(np.ascontiguousarray(y)).to(self.device)
        return gap_amending_loss(
            self.net,
            xt,
            yt,
            ft,
            self.blur,
            cfg.mu,
            cfg.hessian_weight,
            (cfg.pad_z, cfg.pad_xy),
            cfg.upsample,
            cfg.gap_amending,
            frozen=self.model,
            background=torch.from_numpy(background).to(self.device) if cfg.positivity else None,
        )

    def train(
        self,
        progress: bool = True,
        stop_after: int | None = None,
        callback: Callable[[int, int], bool] | None = None,
    ) -> ZSDeconvNet2D:
        """Train up to ``cfg.iterations`` (or ``stop_after`` more steps); returns the model.

        ``callback(iteration, total)`` is called after every step (from this thread); when it
        returns False the run stops there with a checkpoint (``self.cancelled`` is set), so it
        can be resumed.
        """
        cfg = self.cfg
        end = (
            cfg.iterations
            if stop_after is None
            else min(cfg.iterations, self.iteration + stop_after)
        )
        rows: list[dict] = []
        bar = tqdm(
            total=cfg.iterations,
            initial=self.iteration,
            desc="train",
            unit="it",
            disable=not progress or not self.world.is_main,
            dynamic_ncols=True,
        )
        start = time.perf_counter() - self.elapsed
        step_times: list[float] = []
        cap = cfg.iterations  # with a time budget: the most iterations it may choose
        remeasure: list[float] = []  # elapsed seconds at which the budget is fixed again
        since = 0  # the step times measured since the last fix start here
        with bar:
            while self.iteration < end:
                before = time.perf_counter()
                parts = self.step()
                self.elapsed = time.perf_counter() - start
                step_times.append(time.perf_counter() - before)
                rows.append(
                    {"iteration": self.iteration, **parts, "seconds": round(self.elapsed, 3)}
                )
                fix = None
                if cfg.time_budget_s is not None and len(step_times) == PROBE_STEPS:
                    fix = (step_times[1:], cfg.time_budget_s, False)
                elif remeasure and self.elapsed >= remeasure[0] and len(step_times) > since + 2:
                    # again, on the steps since the last fix: the first steps can run slower
                    # (0.30 s against 0.20 s later on a bf16 CPU, so the run ended 30 % early),
                    # steps drift, the machine can get busier
                    fix = (step_times[since:], cfg.budgeted_s, True)
                if fix is not None:
                    if self.run_dir is not None:
                        self._log_rows(rows)
                        rows = []
                    times, budget, again = fix
                    cfg = self._fix_budget(times, start, budget, cap, again)
                    since = len(step_times)
                    done = self.elapsed / budget
                    remeasure = [f * budget for f in REMEASURE_AT if f > done]
                    end = cfg.iterations if stop_after is None else min(end, cfg.iterations)
                    bar.total = cfg.iterations
                    bar.refresh()
                if self.iteration % 10 == 0 or self.iteration == end:
                    postfix = {"loss": f"{parts['loss']:.4f}", "lr": f"{parts['lr']:.1e}"}
                    if cfg.budgeted_s is not None:
                        postfix["left"] = f"{max(cfg.budgeted_s - self.elapsed, 0):.0f}s"
                    bar.set_postfix(postfix)
                bar.update(1)
                if callback is not None and callback(self.iteration, cfg.iterations) is False:
                    self.cancelled = True
                    end = self.iteration
                checkpoint = self.iteration % cfg.checkpoint_every == 0 or self.iteration == end
                if checkpoint and self.run_dir is not None:
                    self._log_rows(rows)
                    rows = []
                    self.save_checkpoint()
                    self.write_plots()
                if self.cancelled:
                    break
        return self.model

    def _fix_budget(
        self, step_times: list[float], start: float, budget: float, cap: int, again=False
    ) -> TrainConfig:
        """Fix ``iterations`` (at most ``cap``) from the measured step time so the run ends
        within ``budget`` seconds; ``again``: a later measurement, on the steps since the last
        fix (the cosine schedule stretches or shrinks to the new count from here).

        The first fix writes and times a checkpoint with plots (the later ones reuse that time),
        and every fix saves the chosen schedule before the run goes on: a resumed run continues
        it exactly (it is not measured again).
        """
        cfg = self.cfg
        # the probe's median leaves out its warm-up spikes; later, the mean counts the
        # occasional slow step as the time it costs (the median fell 2 % short over 180 s)
        step_s = float(np.mean(step_times) if again else np.median(step_times))
        if not again:
            self._checkpoint_s = 0.0
            if self.run_dir is not None:
                tick = time.perf_counter()
                self.save_checkpoint()
                self.write_plots()
                self._checkpoint_s = time.perf_counter() - tick
        checkpoint_s = self._checkpoint_s
        self.elapsed = time.perf_counter() - start
        iterations = budget_iterations(
            budget,
            self.elapsed,
            self.iteration,
            step_s,
            checkpoint_s,
            cfg.checkpoint_every,
            cap,
        )
        self.cfg = cfg.replace(iterations=iterations, time_budget_s=None, budgeted_s=budget)
        if self.run_dir is not None:
            self.cfg.save(self.run_dir / "config.json")
            self.save_checkpoint()
        if self.world.is_main:
            log.info(
                "time budget %g s: %.3f s per step%s and %.2f s per checkpoint measured; "
                "training %d iterations",
                budget,
                step_s,
                f" over the last {len(step_times)} steps" if again else "",
                checkpoint_s,
                iterations,
            )
        return self.cfg

    def write_plots(self) -> None:
        """``loss.png`` and ``preview.png`` in the run folder (best effort: never fatal)."""
        try:
            from .plots import loss_curve, preview

            loss_curve(self.run_dir / "loss.csv", self.run_dir / "loss.png")
            preview(self.model, self.parity_crop, self.cfg, self.run_dir / "preview.png")
        except Exception as err:  # a plotting problem must not kill a long training run
            log.warning("could not write plots: %s", err)


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint as data only (``weights_only=True``: no code is ever executed)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise InputError(f"checkpoint {describe(path)} does not exist; give the training folder")
    fix = "give the run folder or checkpoint.pt written by 'zsdeconvnet train'"
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        raise InputError(f"{describe(path)} is not a zsdeconvnet checkpoint; {fix}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors, truncated zip, code in the pickle
        if "weights only" in str(err).lower():
            raise InputError(
                f"checkpoint {describe(path)} cannot be loaded safely: it holds objects other "
                f"than tensors and plain data (loading them could run code); {fix}"
            ) from None
        raise InputError(f"checkpoint {describe(path)} is damaged or truncated; {fix}") from None
    if not isinstance(state, dict) or not {"model", "config"} <= set(state):
        raise InputError(
            f"{describe(path)} is a PyTorch file but not a zsdeconvnet checkpoint; {fix}"
        )
    return state
