"""Where training runs: the torch device, and whether bf16 autocast pays on it."""

from __future__ import annotations

import torch

from ..runtime.errors import InputError


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), where autocast pays.

    Elsewhere oneDNN emulates bf16 and autocast would be slower than fp32.
    """
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def use_bf16(amp: str, device: torch.device) -> bool:
    """Resolve the ``amp`` setting for a device."""
    if amp == "off":
        return False
    if amp == "bf16":
        return True
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())


def pick_device(name: str) -> torch.device:
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu")
    return torch.device(name)
