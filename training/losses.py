"""Losses of 2D ZS-DeconvNet: PSF re-blurring by FFT, average pooling, Hessian penalty, L1.

``L = mu |f1(y_hat) - y_tilde|_1 + (1 - mu) (|AvgPool(f2(y_hat) (*) PSF_sr) - y_tilde|_1
+ lambda_H R_H(f2))`` with ``R_H(u) = sum_{xx,yy,xy,yx} 0.5 mean(d^2)``.
The PSF convolution is a true convolution (not correlation) computed with real FFTs on a
zero-padded grid (no wrap-around); measured ~50x faster than a direct 31x31 conv on CPU.
Tensors are ``[N, 1, Y, X]``.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


class FFTConvolver(torch.nn.Module):
    """Linear ('same') convolution with a fixed odd-sized 2D or 3D kernel via real FFTs.

    The kernel spectrum is cached per input shape; the grid is zero-padded by the kernel size,
    so nothing wraps around.
    """

    def __init__(self, kernel: torch.Tensor):
        super().__init__()
        if kernel.ndim not in (2, 3) or any(k % 2 == 0 for k in kernel.shape):
            raise ValueError("kernel must be 2D or 3D with odd sizes")
        self.register_buffer("kernel", kernel.float())
        self._cache: dict[tuple, torch.Tensor] = {}

    def _spectrum(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        key = (shape, device)
        if key not in self._cache:
            size = tuple(n + k - 1 for n, k in zip(shape, self.kernel.shape))
            self._cache[key] = torch.fft.rfftn(self.kernel.to(device), s=size)
        return self._cache[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nd = self.kernel.ndim
        shape = tuple(x.shape[-nd:])
        size = tuple(n + k - 1 for n, k in zip(shape, self.kernel.shape))
        dims = tuple(range(-nd, 0))
        spectrum = torch.fft.rfftn(x.float(), s=size, dim=dims) * self._spectrum(shape, x.device)
        full = torch.fft.irfftn(spectrum, s=size, dim=dims)
        crop = tuple(slice(k // 2, k // 2 + n) for k, n in zip(self.kernel.shape, shape))
        return full[(..., *crop)]


def hessian_penalty(u: torch.Tensor) -> torch.Tensor:
    """``R_H``: second finite differences xx, yy, xy (counted twice: xy and yx), 0.5 mean(d^2)."""
    dxx = u[..., :, 2:] - 2 * u[..., :, 1:-1] + u[..., :, :-2]
    dyy = u[..., 2:, :] - 2 * u[..., 1:-1, :] + u[..., :-2, :]
    dxy = u[..., 1:, 1:] - u[..., 1:, :-1] - u[..., :-1, 1:] + u[..., :-1, :-1]
    return 0.5 * (dxx.pow(2).mean() + dyy.pow(2).mean() + 2 * dxy.pow(2).mean())


def parts(
    total: torch.Tensor, denoise: torch.Tensor, deconv: torch.Tensor, hessian: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The logged loss terms, detached and still on the device: reading them waits for the
    device, so the trainer reads them once per step, after the optimiser step is queued."""
    terms = {"loss": total, "denoise": denoise, "deconv": deconv, "hessian": hessian}
    return {name: value.detach() for name, value in terms.items()}


def zs_loss(
    denoised: torch.Tensor,
    deconvolved: torch.Tensor,
    target: torch.Tensor,
    blur: FFTConvolver,
    mu: float,
    hessian_weight: float,
    pad: int,
    upsample: int = 2,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The ZS-DeconvNet loss on the centre of zero-padded patches.

    Parameters
    ----------
    denoised, deconvolved : torch.Tensor
        Network outputs for the padded input (``pad`` px of zeros on each side).
    target : torch.Tensor
        The recorrupted target, unpadded.
    blur : FFTConvolver
        Convolution with the PSF on the super-resolution grid.
    """
    h, w = target.shape[-2:]
    den = denoised[..., pad : pad + h, pad : pad + w]
    reblurred = blur(deconvolved)
    if upsample > 1:
        reblurred = F.avg_pool2d(reblurred, upsample)
    reblurred = reblurred[..., pad : pad + h, pad : pad + w]
    l_den = (den - target).abs().mean()
    l_dec = (reblurred - target).abs().mean()
    s = pad * upsample
    l_hess = hessian_penalty(deconvolved[..., s : s + h * upsample, s : s + w * upsample])
    total = mu * l_den + (1 - mu) * (l_dec + hessian_weight * l_hess)
    return total, parts(total, l_den, l_dec, l_hess)


def hessian_penalty_3d(u: torch.Tensor) -> torch.Tensor:
    """``R_H3D``: the 9 second differences of ``[..., Z, Y, X]`` (zz, yy, xx and the mixed
    pairs, each mixed one counted for both orders), ``mean(d^2)`` each, summed."""
    total = 0.0
    for axis in (-3, -2, -1):
        n = u.shape[axis]
        d = u.narrow(axis, 2, n - 2) - 2 * u.narrow(axis, 1, n - 2) + u.narrow(axis, 0, n - 2)
        total = total + d.pow(2).mean()
    for a, b in ((-3, -2), (-3, -1), (-2, -1)):
        da = u.narrow(a, 1, u.shape[a] - 1) - u.narrow(a, 0, u.shape[a] - 1)
        dab = da.narrow(b, 1, da.shape[b] - 1) - da.narrow(b, 0, da.shape[b] - 1)
        total = total + 2 * dab.pow(2).mean()
    return total


def gap_amending_loss(
    model: torch.nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    full: torch.Tensor,
    blur: FFTConvolver,
    mu: float,
    hessian_weight: float,
    pad: tuple[int, int],
    upsample: int,
    gap_amending: bool = True,
    frozen: torch.nn.Module | None = None,
    background: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The 3D ZS-DeconvNet loss with gap-amending regularisation (METHOD.md section 3).

    Parameters
    ----------
    model : torch.nn.Module
        The two-stage 3D network (with a ``denoise`` method for stage 1).
    x, target : torch.Tensor
        Odd and even slices of the crops, ``[N, 1, Z, Y, X]``; ``x`` is zero-padded by
        ``pad = (pz, pxy)`` on every side, ``target`` is not.
    full : torch.Tensor
        The interleaved crops (both halves, ``2 Z`` slices), padded like ``x``.
    frozen : torch.nn.Module, optional
        The network whose ``denoise`` runs the frozen pass (default ``model``; give the bare
        network when ``model`` is a DistributedDataParallel wrapper).
    background : torch.Tensor, optional
        Per-crop background level ``[N, 1, 1, 1, 1]`` (normalised) added to the re-blurred
        output, which then models the signal above the background only (``positivity``).

    ``G = S_in(f1'(Z)) - S_gt(f1'(Z))`` from a frozen copy of stage 1 on the interleaved crop;
    ``L_den = |f1(in) - gt| + |f1(in) - gt - G|``,
    ``L_dec = |D(f2(in) (*) PSF) - gt| + |D(...) - gt - G| + lambda R_H3D(f2)``,
    ``L = mu L_den + (1 - mu) L_dec``.
    """
    pz, pxy = pad
    z, h, w = target.shape[-3:]
    centre = (..., slice(pz, pz + z), slice(pxy, pxy + h), slice(pxy, pxy + w))
    denoised, deconvolved = model(x)
    den = denoised[centre]
    reblurred = blur(deconvolved)
    if upsample > 1:
        reblurred = F.avg_pool3d(reblurred, (1, upsample, upsample))
    reblurred = reblurred[centre]
    if background is not None:
        reblurred = reblurred + background
    if gap_amending:
        with torch.no_grad():  # the frozen copy: current weights, no gradient
            stack = (frozen or model).denoise(full)[
                (..., slice(pz, pz + 2 * z), slice(pxy, pxy + h), slice(pxy, pxy + w))
            ]
            gap = stack[..., 0::2, :, :] - stack[..., 1::2, :, :]
    else:
        gap = torch.zeros_like(target)
    l_den = (den - target).abs().mean() + (den - target - gap).abs().mean()
    l_fit = (reblurred - target).abs().mean() + (reblurred - target - gap).abs().mean()
    s = pxy * upsample
    sr_centre = (..., slice(pz, pz + z), slice(s, s + h * upsample), slice(s, s + w * upsample))
    l_hess = hessian_penalty_3d(deconvolved[sr_centre])
    total = mu * l_den + (1 - mu) * (l_fit + hessian_weight * l_hess)
    return total, parts(total, l_den, l_fit, l_hess)
