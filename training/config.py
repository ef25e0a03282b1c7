"""The one training configuration object, its presets, and its JSON file.

Every number in METHOD.md is a field here. The object is saved beside every checkpoint
(``config.json``), summarised into the ONNX metadata, and ``train --config FILE`` reruns it.
Lengths in nm.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..runtime.errors import InputError, describe

#: The 2D network's 2x tails (training/unet2d.py)
SR_TAILS = ("nearest", "shuffle")
#: Where training starts (training/prior_init.py): the shipped prior where it fits, or random
INITS = ("auto", "prior", "scratch")


@dataclass
class TrainConfig:
    """Zero-shot training of ZS-DeconvNet: 2D (METHOD.md section 2) or 3D (section 3).

    Attributes are grouped: data and optics, recorruption (2D), 3D pairs and network, 2D
    network, loss, optimisation, bookkeeping. ``preset`` names where the defaults came from;
    :func:`preset` fills the defaults of a mode.
    """

    # data and optics
    images: list[str] = field(default_factory=list)
    psf: str = ""
    mode: str = "2d"
    channel: int | None = None
    pixel_size_nm: float | None = None
    psf_pixel_size_nm: float | None = None
    background: float | None = None  # camera offset (ADU); estimated when None
    # camera gain (ADU per photo-electron), the centre of beta1's range; when None, measured
    # from the training images' noise (physics/noise.py), 1 (the paper's) where it cannot be
    gain: float | None = None
    norm_low: float = 0.0
    norm_high: float = 99.9
    # recorruption (alpha, beta1 ~ U[range]; beta2 ~ estimate * U[range])
    alpha_range: tuple[float, float] = (0.5, 1.5)
    beta1_range: tuple[float, float] = (0.5, 1.5)
    beta2_scale_range: tuple[float, float] = (0.8, 1.2)
    # patches (2D: patch_size x patch_size; 3D: crop_z slices of patch_size x patch_size)
    patch_size: int = 128
    pad_xy: int = 16
    rotation: bool = True
    # 3D: odd/even slices of crop_z-slice crops, gap-amending regularisation, 3D RCAN
    z_step_nm: float | None = None
    psf_z_step_nm: float | None = None
    crop_z: int = 26
    pad_z: int = 2
    gap_amending: bool = True
    rcan_channels: int = 64
    rcan_groups: int = 2
    rcab_per_group: int = 2
    ca_reduction: int = 16
    # Channel attention pools over a local (z, y, x) window instead of the whole volume, so
    # the receptive field is finite and tiled prediction stays exact; None = global (reference).
    ca_window: tuple[int, int, int] | None = (3, 9, 9)
    # SIM (mode sim2d, METHOD.md section 5): raw frames are recorrupted into sim_pairs pairs of
    # sets, each set reconstructed (Wiener constant sim_wiener) into one training pair
    sim_phases: int = 3
    sim_pairs: int = 16
    sim_wiener: float = 0.05
    # network
    base_channels: int = 32
    levels: int = 4
    convs_per_level: int = 3
    sr_channels: int = 128
    upsample: int = 2
    # 2x tail: "nearest" (the paper's: upsample, then convs on the fine grid) or "shuffle"
    # (sub-pixel: convs at input resolution, then a pixel shuffle; training/unet2d.py)
    sr_tail: str = "nearest"
    # loss
    mu: float = 0.5
    hessian_weight: float = 0.02
    psf_sigmas: float = 4.0
    # 3D: a non-negative deconvolved output above the stack's background: stage 2 ends in ReLU
    # (not LeakyReLU) and the loss re-blurs it onto the background level estimated from the
    # stack (StackSampler), so positivity constrains what the PSF's weak high frequencies
    # cannot (benchmarks/RESULTS.md, 3D beads)
    positivity: bool = False
    # optimisation
    iterations: int = 50_000
    batch_size: int = 4
    lr: float = 5e-5
    schedule: str = "step"  # "step" (halve every lr_step), "milestones" or "cosine"
    lr_step: int = 10_000
    lr_milestones: tuple[int, ...] = (5000, 7500, 10000)
    lr_min_fraction: float = 0.02
    # Wall-time budget (s) of the training loop (checkpoints and plots included, export not):
    # the trainer times its first steps and fixes ``iterations`` to end within it, then sets
    # ``budgeted_s`` to the budget and this back to None (so a resumed run keeps the schedule)
    time_budget_s: float | None = None
    budgeted_s: float | None = None
    # Check the PSF against the first training frame before training (physics/psf_check.py):
    # a warning when they disagree, the record kept for the quality report
    psf_check: bool = True
    # Mixed precision for the 2D network: "auto" = bf16 autocast on CUDA and on CPUs with
    # native bf16 (AVX512-BF16 or AMX; measured 2.1x faster steps on such a CPU, with the same
    # quality as fp32 in benchmarks/RESULTS.md), fp32 elsewhere; "bf16"; "off" (fp32).
    amp: str = "auto"
    # Where 2D training pairs are made: "numpy" (scipy on the host, per pair), "torch" (the
    # whole batch on the training device: training/pairs_torch.py), "auto" = torch on CUDA
    pair_backend: str = "auto"
    # bookkeeping
    preset: str = "paper"
    # auto: the shipped 2D prior when the network and PSF fit it, else random (scratch)
    init: str = "auto"
    # a prior file made by benchmarks/train_prior.py (weights only); None = the shipped one
    prior_file: str | None = None
    seed: int = 0
    device: str = "cpu"
    checkpoint_every: int = 500
    threads: int | None = None

    def __post_init__(self) -> None:
        _check_types(self)
        self.alpha_range = tuple(self.alpha_range)
        self.beta1_range = tuple(self.beta1_range)
        self.beta2_scale_range = tuple(self.beta2_scale_range)
        self.lr_milestones = tuple(self.lr_milestones)
        if self.ca_window is not None:
            self.ca_window = tuple(int(w) for w in self.ca_window)
            if len(self.ca_window) != 3 or any(w < 1 or w % 2 == 0 for w in self.ca_window):
                raise InputError(f"ca_window must be 3 odd sizes (z, y, x), got {self.ca_window}")
        multiple = self.size_multiple
        if self.mode not in MODES:
            raise InputError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.mode == "sim2d" and self.upsample != 1:
            raise InputError(
                "sim2d trains on SIM reconstructions, which are already fine: upsample 1"
            )
        if self.sim_phases < 3 or self.sim_pairs < 1 or self.sim_wiener <= 0:
            raise InputError("sim_phases must be >= 3, sim_pairs >= 1 and sim_wiener > 0")
        if self.positivity and self.mode != "3d":
            raise InputError(
                "positivity is a 3D setting (the 2D network's output already ends in a ReLU); "
                "leave it off for 2D training"
            )
        if self.mode == "3d" and (self.crop_z < 4 or self.crop_z % 2):
            raise InputError(
                f"crop_z must be an even number >= 4 (odd/even halves), got {self.crop_z}"
            )
        if (self.patch_size + 2 * self.pad_xy) % multiple:
            raise InputError(
                f"patch size {self.patch_size} + 2 x pad {self.pad_xy} must be a multiple of "
                f"{multiple} (2^(levels-1) for a {self.levels}-level U-Net)"
            )
        if not 0 <= self.mu <= 1:
            raise InputError(f"mu must be in [0, 1], got {self.mu}")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise InputError(
                f"time budget must be a positive number of seconds, not {self.time_budget_s}"
            )
        if self.iterations < 1 or self.batch_size < 1 or self.lr <= 0:
            raise InputError("iterations, batch size and learning rate must be positive")
        if self.schedule not in ("step", "milestones", "cosine"):
            raise InputError(f"schedule must be step, milestones or cosine, not {self.schedule!r}")
        if self.amp not in ("auto", "bf16", "off"):
            raise InputError(f"amp must be auto, bf16 or off, not {self.amp!r}")
        if self.pair_backend not in PAIR_BACKENDS:
            raise InputError(
                f"pair_backend must be one of {PAIR_BACKENDS}, not {self.pair_backend!r}"
            )
        if self.pair_backend == "torch" and self.mode != "2d":
            raise InputError(
                "pair_backend torch makes 2D recorruption pairs; 3D and SIM pairs are made with "
                "numpy (use auto or numpy)"
            )
        if self.init not in INITS:
            raise InputError(f"init must be one of {INITS}, not {self.init!r}")
        if self.prior_file and self.init == "scratch":
            raise InputError(
                "--prior names a prior to start from, --init scratch starts from random "
                "weights; leave one of them out"
            )
        if self.sr_tail not in SR_TAILS:
            raise InputError(f"sr_tail must be one of {SR_TAILS}, not {self.sr_tail!r}")
        if self.upsample not in (1, 2):
            raise InputError("upsample must be 1 or 2")
        if self.levels < 2 or self.convs_per_level < 1:
            raise InputError("levels must be >= 2 and convs_per_level >= 1")

    @property
    def size_multiple(self) -> int:
        """Spatial input sizes must be multiples of this (U-Net pooling; 1 for 3D RCAN)."""
        return 1 if self.mode == "3d" else 2 ** (self.levels - 1)

    @property
    def ndim(self) -> int:
        return 3 if self.mode == "3d" else 2

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    def save(self, path: str | os.PathLike) -> None:
        """Write as JSON (atomically)."""
        from ..runtime.io import atomic_output

        with atomic_output(Path(path)) as tmp:
            tmp.write_text(self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> TrainConfig:
        """Read a JSON config; unknown or malformed fields are one clear error."""
        try:
            record = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as err:  # ValueError: JSON and UTF-8
            raise InputError(f"config {describe(path)} is not readable JSON ({err})") from None
        if not isinstance(record, dict):
            raise InputError(f"config {describe(path)} must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(record) - known)
        if unknown:
            raise InputError(f"config {describe(path)} has unknown fields {unknown}")
        try:
            return cls(**record)
        except TypeError as err:
            raise InputError(f"config {describe(path)} is invalid: {err}") from None

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        """From the JSON saved in a checkpoint; fields retired since are dropped."""
        record = json.loads(text)
        for name in RETIRED_FIELDS:
            record.pop(name, None)
        return cls(**record)

    def replace(self, **changes) -> TrainConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


MODES = ("2d", "3d", "sim2d")
#: Where 2D training pairs are made (``TrainConfig.pair_backend``)
PAIR_BACKENDS = ("auto", "numpy", "torch")

#: Bounds that keep a (possibly hand-edited or corrupt) config from asking for absurd work
BOUNDS = {
    "levels": (2, 8),
    "convs_per_level": (1, 8),
    "base_channels": (1, 1024),
    "sr_channels": (1, 1024),
    "rcan_channels": (1, 1024),
    "rcan_groups": (1, 64),
    "rcab_per_group": (1, 64),
    "ca_reduction": (1, 1024),
    "patch_size": (8, 4096),
    "pad_xy": (0, 1024),
    "pad_z": (0, 256),
    "crop_z": (2, 1024),
    "batch_size": (1, 4096),
    "iterations": (1, 10**8),
    "lr_step": (1, 10**12),
    "checkpoint_every": (1, 10**12),
    "sim_pairs": (1, 10_000),
    "sim_phases": (1, 64),
    "threads": (1, 4096),
    "channel": (0, 4096),
    "gain": (1e-6, 1e6),
}


def _number(value, integer: bool) -> bool:
    if isinstance(value, bool):
        return False
    if integer:
        return isinstance(value, int)
    return isinstance(value, (int, float)) and math.isfinite(value)


def _check_types(cfg) -> None:
    """Every field of the type its annotation names (JSON gives anything), within BOUNDS."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        kind = str(f.type).replace(" ", "")
        if value is None and kind.endswith("|None"):
            continue
        base = kind.removesuffix("|None")
        if base in ("int", "float"):
            ok = _number(value, base == "int")
        elif base in ("str", "bool"):
            ok = isinstance(value, str if base == "str" else bool)
        elif base == "list[str]":
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        elif base.startswith("tuple["):
            inner = base[len("tuple[") : -1].split(",")
            integer = inner[0] == "int"
            ok = isinstance(value, (list, tuple)) and all(_number(v, integer) for v in value)
            if ok and inner[-1] != "...":
                ok = len(value) == len(inner)
        else:
            ok = True
        if not ok:
            raise InputError(
                f"config field {f.name} must be {kind.replace('|', ' or ')}, got {value!r}"
            )
        low_high = BOUNDS.get(f.name)
        if low_high and value is not None and not low_high[0] <= value <= low_high[1]:
            raise InputError(f"config field {f.name} must be in {list(low_high)}, got {value}")


#: Fields older checkpoints may carry that no longer mean anything.
RETIRED_FIELDS = ("preview_every",)

#: The ``fast`` preset's 2D network and schedule (2D and 2D-SIM), chosen by measurement on a
#: 2-core CPU (benchmarks/RESULTS.md, "Training speed").
FAST_2D = dict(
    base_channels=16,
    sr_channels=32,
    convs_per_level=2,
    hessian_weight=0.005,
    iterations=2000,
    lr=2e-4,
    schedule="cosine",
    checkpoint_every=250,
)

#: Presets per mode. ``paper`` is the reference (2D: RTX 3090, ~1 h; 3D: ~2 h); ``fast`` was
#: chosen by measurement on a 2-core CPU (benchmarks/RESULTS.md): a smaller network and a
#: higher, cosine-decayed learning rate.
PRESETS: dict[str, dict[str, dict]] = {
    "2d": {
        "paper": {},
        "fast": dict(FAST_2D),
    },
    # ZS-DeconvNet-SIM: the 2D networks without upsampling. paper: the reference's 2D-SIM
    # recorruption ranges (its alpha in [0.2, 0.5] is 1/alpha here: input noise sigma * alpha).
    # fast keeps the 2D ranges: on simulated 5-photon SIM (benchmarks/quality_sim.py, 1000
    # iterations) they gave +4.9 / +3.4 dB over conventional SIM (denoised / deconvolved)
    # against +2.1 / +2.3 dB with the reference's (much noisier inputs: 5-26x the variance).
    "sim2d": {
        "paper": dict(upsample=1, alpha_range=(2.0, 5.0), beta1_range=(1.5, 3.0)),
        "fast": dict(FAST_2D, upsample=1),
    },
    "3d": {
        "paper": dict(
            patch_size=64,
            pad_xy=8,
            hessian_weight=0.1,
            iterations=10_000,
            batch_size=3,
            lr=1e-4,
            schedule="milestones",
            norm_high=99.99,
        ),
        # positivity and 500 iterations (not 1500: PSNR fell with longer training): +5.1 dB
        # over RL-3D on sheets, +2.2 dB on filaments; sparse beads need hessian_weight 0.001,
        # lr 1e-3 and 1500 iterations (benchmarks/RESULTS.md, "3D quality")
        "fast": dict(
            patch_size=32,
            crop_z=12,
            pad_xy=8,
            hessian_weight=0.1,
            positivity=True,
            rcan_channels=8,
            ca_reduction=2,
            iterations=500,
            batch_size=2,
            lr=3e-4,
            schedule="cosine",
            checkpoint_every=250,
            norm_high=99.99,
        ),
    },
}


def preset(name: str, mode: str = "2d", **overrides) -> TrainConfig:
    """A config from a preset name and mode, with ``overrides`` (``None`` values ignored)."""
    if mode not in PRESETS:
        raise InputError(f"mode must be one of {MODES}, got {mode!r}")
    if name not in PRESETS[mode]:
        raise InputError(f"unknown preset {name!r}; choose one of {sorted(PRESETS[mode])}")
    fields = {**PRESETS[mode][name], "preset": name, "mode": mode}
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**fields)


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict:
    """``["hessian_weight=0.005", "iterations=4000"]`` -> field overrides, values as JSON.

    Values that are not JSON (``schedule=cosine``) are taken as strings; unknown fields are
    one clear error.
    """
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    overrides = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or name not in known:
            raise InputError(f"override {item!r} must be FIELD=VALUE with a TrainConfig field")
        try:
            overrides[name] = json.loads(text)
        except json.JSONDecodeError:
            overrides[name] = text
    return overrides
