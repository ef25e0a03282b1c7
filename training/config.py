"""The one training configuration object, its presets, and its JSON file.

Every number in METHOD.md is a field here. The object is saved beside every checkpoint
(``config.json``), summarised into the ONNX metadata, and ``train --config FILE`` reruns it.
Lengths in nm.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..runtime.errors import InputError, describe


@dataclass
class TrainConfig:
    """Zero-shot training of a 2D ZS-DeconvNet (METHOD.md section 2).

    Attributes are grouped: data and optics, recorruption, network, loss, optimisation,
    bookkeeping. ``preset`` names where the defaults came from.
    """

    # data and optics
    images: list[str] = field(default_factory=list)
    psf: str = ""
    mode: str = "2d"
    channel: int | None = None
    pixel_size_nm: float | None = None
    psf_pixel_size_nm: float | None = None
    background: float | None = None  # camera offset (ADU); estimated when None
    gain: float = 1.0  # ADU per photo-electron: centres beta1's range
    norm_low: float = 0.0
    norm_high: float = 99.9
    # recorruption (alpha, beta1 ~ U[range]; beta2 ~ estimate * U[range])
    alpha_range: tuple[float, float] = (0.5, 1.5)
    beta1_range: tuple[float, float] = (0.5, 1.5)
    beta2_scale_range: tuple[float, float] = (0.8, 1.2)
    # patches
    patch_size: int = 128
    pad_xy: int = 16
    rotation: bool = True
    # network
    base_channels: int = 32
    levels: int = 4
    convs_per_level: int = 3
    sr_channels: int = 128
    upsample: int = 2
    # loss
    mu: float = 0.5
    hessian_weight: float = 0.02
    psf_sigmas: float = 4.0
    # optimisation
    iterations: int = 50_000
    batch_size: int = 4
    lr: float = 5e-5
    schedule: str = "step"  # "step" (halve every lr_step) or "cosine"
    lr_step: int = 10_000
    lr_min_fraction: float = 0.02
    # bookkeeping
    preset: str = "paper"
    seed: int = 0
    device: str = "cpu"
    checkpoint_every: int = 500
    preview_every: int = 0  # 0: with every checkpoint
    threads: int | None = None

    def __post_init__(self) -> None:
        self.alpha_range = tuple(self.alpha_range)
        self.beta1_range = tuple(self.beta1_range)
        self.beta2_scale_range = tuple(self.beta2_scale_range)
        multiple = 2 ** (self.levels - 1)
        if self.mode != "2d":
            raise InputError(f"mode {self.mode!r} is not available yet; use --mode 2d")
        if (self.patch_size + 2 * self.pad_xy) % multiple:
            raise InputError(
                f"patch size {self.patch_size} + 2 x pad {self.pad_xy} must be a multiple of "
                f"{multiple} (2^(levels-1) for a {self.levels}-level U-Net)"
            )
        if not 0 <= self.mu <= 1:
            raise InputError(f"mu must be in [0, 1], got {self.mu}")
        if self.iterations < 1 or self.batch_size < 1 or self.lr <= 0:
            raise InputError("iterations, batch size and learning rate must be positive")
        if self.schedule not in ("step", "cosine"):
            raise InputError(f"schedule must be 'step' or 'cosine', got {self.schedule!r}")
        if self.upsample not in (1, 2):
            raise InputError("upsample must be 1 or 2")
        if self.levels < 2 or self.convs_per_level < 1:
            raise InputError("levels must be >= 2 and convs_per_level >= 1")

    @property
    def size_multiple(self) -> int:
        """Input sizes must be multiples of this (pooling in the U-Net)."""
        return 2 ** (self.levels - 1)

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
            record = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
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

    def replace(self, **changes) -> TrainConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


#: Presets: ``paper`` is the reference (RTX 3090, ~1 h); ``fast`` was chosen by measurement on
#: a 2-core CPU (benchmarks/RESULTS.md): a smaller network and a higher, cosine-decayed lr.
PRESETS: dict[str, dict] = {
    "paper": {},
    "fast": dict(
        base_channels=16,
        sr_channels=32,
        convs_per_level=2,
        iterations=2000,
        lr=2e-4,
        schedule="cosine",
        checkpoint_every=250,
    ),
}


def preset(name: str, **overrides) -> TrainConfig:
    """A config from a preset name, with ``overrides`` (``None`` values are ignored)."""
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    fields = {**PRESETS[name], "preset": name}
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**fields)
