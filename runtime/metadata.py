"""The model-file contract: what an exported ONNX model says about itself.

Export writes these fields into the ONNX ``metadata_props`` (one JSON value per key, keys
prefixed ``zsdeconvnet.``); the runtime reads and validates them here. The schema lives in the
runtime (the reader) and export imports it (the writer), so the two can never disagree.

Axes convention: spatial axes only, in array order, ``"YX"`` for 2D models and ``"ZYX"`` for 3D.
Every per-axis tuple below follows that order. Lengths are in nanometres.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import InputError

#: Version of this schema. Bump it on any incompatible change and keep readers for old ones.
FORMAT_VERSION = 1
#: Versions this runtime can read.
SUPPORTED_VERSIONS = (1,)
KEY_PREFIX = "zsdeconvnet."

INPUT_NAME = "input"
OUTPUT_NAMES = ("denoised", "deconvolved")


#: Upper bounds of the tiling fields (ours: halo ~120, multiple 8-16, scale 2)
LIMITS = {"halo": 4096, "size_multiple": 1024, "output_scale": 8}


@dataclass(frozen=True)
class Normalization:
    """How raw pixel values map to the network's input domain.

    ``x_norm = (x - p_low) / (p_high - p_low)`` with the percentiles taken over a whole frame
    (never per tile). Outputs are mapped back with the inverse, so they stay in input units.
    """

    method: str = "percentile"
    low: float = 0.0
    high: float = 100.0

    def __post_init__(self) -> None:
        if self.method != "percentile":
            raise InputError(f"unknown normalisation method {self.method!r}; only 'percentile'")
        if not 0.0 <= self.low < self.high <= 100.0:
            raise InputError(
                f"normalisation percentiles must satisfy 0 <= low < high <= 100, "
                f"got low={self.low}, high={self.high}"
            )


@dataclass(frozen=True)
class ModelMetadata:
    """Everything the runtime needs to run a model file correctly.

    Attributes
    ----------
    ndim : int
        Number of spatial dimensions (2 or 3).
    axes : str
        Spatial axes, ``"YX"`` or ``"ZYX"``.
    output_scale : tuple of int
        Size ratio deconvolved/input per spatial axis (e.g. ``(2, 2)`` or ``(1, 2, 2)``).
    size_multiple : tuple of int
        Each spatial input size must be a multiple of this (U-Net pooling).
    halo : tuple of int
        Receptive-field radius per axis in input pixels: tiles overlapping by at least this
        much give the same result as one untiled pass.
    normalization : Normalization
        The input normalisation recipe.
    input_pixel_size_nm, output_pixel_size_nm : tuple of float
        Pixel sizes (nm) the model was trained for, per spatial axis.
    psf : dict
        PSF summary: shape, pixel size (nm), sha256 of the file, source.
    training : dict
        Training summary: preset, iterations, seed, software version, date, ...
    channel : int or None
        Channel of a multi-channel training file the model was trained on, if any.
    self_check : dict or None
        Reduced-precision models only: a check tile, its fp32 outputs and the gate (dB) the
        model must reach on the machine that runs it (``runtime.selfcheck``).
    effective_halo : dict or None
        The context measured at export (``runtime.reach``) that keeps every output within
        ``tolerance`` of the output range of an untiled pass: ``halo`` per axis (input px, at
        most ``halo``), ``tolerance``, ``margin``, ``max_difference``, ``probe_tile``,
        ``images``; and, where the graph can be cut in two (``runtime.stages``),
        ``stage_halo`` (the context each stage needs on its own when restored stage by stage,
        ``runtime.staged``) and ``stage_max_difference``. ``None`` (older models): prediction
        uses the exact ``halo``.
    quality : dict or None
        The quality report measured at export on the training image (``physics.quality``):
        ``summary`` (one line), ``warnings`` (list of lines), the numbers, and the PSF check's
        verdict. ``None`` for older models and models whose training image was not readable.
    format_version : int
        Schema version of this record.
    """

    ndim: int
    axes: str
    output_scale: tuple[int, ...]
    size_multiple: tuple[int, ...]
    halo: tuple[int, ...]
    normalization: Normalization = field(default_factory=Normalization)
    input_pixel_size_nm: tuple[float, ...] | None = None
    output_pixel_size_nm: tuple[float, ...] | None = None
    psf: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    channel: int | None = None
    self_check: dict[str, Any] | None = None
    effective_halo: dict[str, Any] | None = None
    quality: dict[str, Any] | None = None
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.ndim not in (2, 3):
            raise InputError(f"model dimensionality must be 2 or 3, got {self.ndim}")
        expected_axes = "YX" if self.ndim == 2 else "ZYX"
        if self.axes != expected_axes:
            raise InputError(f"a {self.ndim}D model must have axes {expected_axes!r}")
        for name in ("output_scale", "size_multiple", "halo"):
            value = getattr(self, name)
            if len(value) != self.ndim or any(int(v) != v or v < 0 for v in value):
                raise InputError(f"{name} must be {self.ndim} non-negative integers, got {value}")
        if any(v < 1 for v in self.output_scale) or any(v < 1 for v in self.size_multiple):
            raise InputError("output_scale and size_multiple must be >= 1")
        # absurd values would make tiles of absurd size: refuse them as corrupt
        for name, limit in LIMITS.items():
            if any(v > limit for v in getattr(self, name)):
                raise InputError(
                    f"{name} {getattr(self, name)} exceeds {limit}; the file is corrupt"
                )
        for name in ("input_pixel_size_nm", "output_pixel_size_nm"):
            value = getattr(self, name)
            if value is not None and (len(value) != self.ndim or any(v <= 0 for v in value)):
                raise InputError(f"{name} must be {self.ndim} positive numbers, got {value}")
        if self.self_check is not None and not isinstance(self.self_check, dict):
            raise InputError("self_check must be a record (JSON object); the file is corrupt")
        if self.effective_halo is not None:
            self._check_effective_halo()
        if self.quality is not None and not (
            isinstance(self.quality, dict)
            and isinstance(self.quality.get("summary"), str)
            and isinstance(self.quality.get("warnings"), list)
            and all(isinstance(w, str) for w in self.quality["warnings"])
        ):
            raise InputError(
                "quality must be a record with a summary line and a list of warnings; the file "
                "is corrupt (re-export the model)"
            )

    def _check_effective_halo(self) -> None:
        record = self.effective_halo
        halo = record.get("halo") if isinstance(record, dict) else None
        if (
            not isinstance(halo, list)
            or len(halo) != self.ndim
            or any(not isinstance(h, int) or not 0 <= h <= e for h, e in zip(halo, self.halo))
        ):
            raise InputError(
                f"effective_halo must hold {self.ndim} integers between 0 and the halo "
                f"{self.halo}, got {halo!r}; the file is corrupt (re-export the model)"
            )
        stage = record.get("stage_halo")
        if stage is not None and (
            not isinstance(stage, list)
            or len(stage) != self.ndim
            or any(not isinstance(h, int) or not 0 < h <= e for h, e in zip(stage, self.halo))
        ):
            raise InputError(
                f"effective_halo's stage_halo must hold {self.ndim} integers between 1 and the "
                f"halo {self.halo}, got {stage!r}; the file is corrupt (re-export the model)"
            )

    # -- (de)serialisation -------------------------------------------------------------------

    def to_props(self) -> dict[str, str]:
        """Return the ONNX ``metadata_props`` entries (key -> JSON string)."""
        record = asdict(self)
        return {KEY_PREFIX + k: json.dumps(v) for k, v in record.items()}

    @classmethod
    def from_props(cls, props: dict[str, str], source: str = "model") -> ModelMetadata:
        """Validate and build from ONNX ``metadata_props``.

        Raises
        ------
        InputError
            If the fields are missing, malformed or of an unknown format version.
        """
        ours = {k[len(KEY_PREFIX) :]: v for k, v in props.items() if k.startswith(KEY_PREFIX)}
        if not ours:
            raise InputError(
                f"{source} has no zsdeconvnet metadata; it was not exported by "
                "'zsdeconvnet export' (re-export it from its checkpoint)"
            )
        try:
            record = {k: json.loads(v) for k, v in ours.items()}
        except json.JSONDecodeError as err:
            raise InputError(f"{source} has corrupt zsdeconvnet metadata ({err})") from None
        version = record.get("format_version")
        if version not in SUPPORTED_VERSIONS:
            raise InputError(
                f"{source} uses metadata format version {version!r}; this zsdeconvnet reads "
                f"versions {list(SUPPORTED_VERSIONS)} (upgrade zsdeconvnet or re-export the model)"
            )
        required = ("ndim", "axes", "output_scale", "size_multiple", "halo")
        missing = [k for k in required if k not in record]
        if missing:
            raise InputError(f"{source} metadata lacks {', '.join(missing)}; re-export the model")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(record) - known)
        if unknown:
            raise InputError(
                f"{source} metadata has unknown fields {unknown} for version {version}; "
                "upgrade zsdeconvnet"
            )
        try:
            record["normalization"] = Normalization(**record.get("normalization", {}))
            for k in ("output_scale", "size_multiple", "halo"):
                record[k] = tuple(int(v) for v in record[k])
            for k in ("input_pixel_size_nm", "output_pixel_size_nm"):
                if record.get(k) is not None:
                    record[k] = tuple(float(v) for v in record[k])
            return cls(**record)
        except (TypeError, ValueError) as err:  # one line, whatever names the file holds
            reason = str(err).replace("\n", "\\n").replace("\r", "\\r")
            raise InputError(f"{source} has invalid zsdeconvnet metadata: {reason}") from None

    def summary(self) -> str:
        """A human-readable multi-line description (used by ``zsdeconvnet info``)."""
        px_in = _fmt_px(self.input_pixel_size_nm)
        px_out = _fmt_px(self.output_pixel_size_nm)
        lines = [
            f"format version : {self.format_version}",
            f"dimensionality : {self.ndim}D ({self.axes})",
            f"output scale   : {'x'.join(map(str, self.output_scale))} (deconvolved vs input)",
            f"size multiple  : {'x'.join(map(str, self.size_multiple))}",
            f"halo (px)      : {'x'.join(map(str, self.halo))} (exact)",
            f"normalisation  : percentiles {self.normalization.low}-{self.normalization.high}",
            f"pixel size nm  : input {px_in}, output {px_out}",
        ]
        if self.effective_halo is not None:
            record = self.effective_halo
            lines.append(
                f"effective halo : {'x'.join(map(str, record['halo']))} px (used by default; "
                f"largest difference {record.get('max_difference')} of the output range, "
                f"contract {record.get('tolerance')})"
            )
            if record.get("stage_halo"):
                lines.append(
                    f"stage halo     : {'x'.join(map(str, record['stage_halo']))} px per stage "
                    f"(restored stage by stage; largest difference "
                    f"{record.get('stage_max_difference')})"
                )
        if self.quality is not None:
            lines.append(f"quality        : {self.quality['summary']}")
            lines += [f"  warning      : {w}" for w in self.quality["warnings"]]
        if self.channel is not None:
            lines.append(f"channel        : {self.channel}")
        if isinstance(self.self_check, dict):
            tile = self.self_check.get("input")
            shape = tile.get("shape", []) if isinstance(tile, dict) else []
            lines.append(
                f"self-check     : {'x'.join(map(str, shape[2:]))} tile, gate "
                f"{self.self_check.get('gate_db')} dB, at export "
                f"{self.self_check.get('psnr_at_export_db')}"
            )
        if self.psf:
            lines.append("psf            : " + ", ".join(f"{k}={v}" for k, v in self.psf.items()))
        if self.training:
            lines.append(
                "training       : " + ", ".join(f"{k}={v}" for k, v in self.training.items())
            )
        return "\n".join(lines)


def _fmt_px(values: tuple[float, ...] | None) -> str:
    return "unknown" if values is None else " x ".join(f"{v:g}" for v in values)
