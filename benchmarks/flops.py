"""Arithmetic counts and measured matrix-product peaks, for achieved-rate figures.

``conv_flops`` counts the multiply-adds (x2) of every convolution of a network for one input
shape; ``matmul_peak`` measures what this machine's matrix product reaches (the practical
ceiling a convolution network can approach), in the same process as the figure it divides.
"""

from __future__ import annotations

import time

import torch
from torch import nn


def conv_flops(net: nn.Module, shape: tuple[int, ...]) -> float:
    """Floating-point operations (2 per multiply-add) of all convolutions for one ``shape`` input.

    Runs the network once on a zero input of ``shape`` (``[N, C, *spatial]``) on the CPU with
    forward hooks; the count does not depend on the values.
    """
    total = 0.0

    def hook(module: nn.Module, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        kernel = 1
        for k in module.kernel_size:
            kernel *= k
        total += 2.0 * output.numel() * (module.in_channels // module.groups) * kernel

    handles = [
        m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.Conv2d | nn.Conv3d)
    ]
    try:
        device = next(net.parameters()).device
        dtype = next(net.parameters()).dtype
        with torch.no_grad():
            net(torch.zeros(shape, device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
    return total


def matmul_peak(device: str = "cpu", dtype: torch.dtype = torch.float32, n: int = 4096) -> float:
    """Measured FLOP/s of an ``n x n x n`` matrix product (best of 5 after a warm-up)."""
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.rand((n, n), device=device, dtype=dtype, generator=gen)
    b = torch.rand((n, n), device=device, dtype=dtype, generator=gen)
    best = float("inf")
    for i in range(6):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i:
            best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best
