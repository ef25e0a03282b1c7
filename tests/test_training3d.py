"""3D ZS-DeconvNet: odd/even pairs, gap-amending loss, 3D RCAN, export and exact 3D tiling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F
from zsdeconvnet.export.checkpoint import export_checkpoint
from zsdeconvnet.physics.psf import check_psf
from zsdeconvnet.physics.simulate import SimulationConfig, simulate
from zsdeconvnet.runtime.model import Model
from zsdeconvnet.runtime.predict import PredictOptions, Predictor
from zsdeconvnet.training.config import preset
from zsdeconvnet.training.data3d import background_level
from zsdeconvnet.training.losses import FFTConvolver, gap_amending_loss, hessian_penalty_3d
from zsdeconvnet.training.rcan3d import ZSDeconvNet3D, rcan_halo
from zsdeconvnet.training.trainer import Trainer, load_checkpoint

TINY3D = dict(
    rcan_channels=4,
    ca_reduction=2,
    rcan_groups=1,
    rcab_per_group=1,
    patch_size=16,
    crop_z=8,
    pad_xy=4,
    pad_z=1,
    batch_size=1,
    checkpoint_every=3,
    ca_window=(3, 5, 5),
)


@pytest.fixture(scope="module")
def stack():
    cfg = SimulationConfig(
        structure="sheets",
        dims=3,
        size=32,
        z_size=12,
        na=1.1,
        refractive_index=1.33,
        oversample=2,
        photons=20,
        pixel_nm=92.6,
        psf_size=15,
        seed=1,
    )
    out = simulate(cfg)
    psf = check_psf(out["psf"], (cfg.z_step_nm, cfg.pixel_nm, cfg.pixel_nm), 3)
    return cfg, out, psf


def make_trainer(stack, run_dir, **changes):
    cfg_sim, out, psf = stack
    cfg = preset("fast", "3d", **{**TINY3D, **changes})
    return Trainer(
        cfg,
        [out["noisy"].astype(np.float32)],
        psf,
        cfg_sim.pixel_nm,
        run_dir,
        z_step_nm=cfg_sim.z_step_nm,
    )


def test_fft_convolution_3d_is_a_true_convolution():
    rng = np.random.default_rng(0)
    kernel = torch.from_numpy(rng.random((3, 5, 7)).astype(np.float32))
    x = torch.from_numpy(rng.random((1, 1, 6, 9, 11)).astype(np.float32))
    direct = F.conv3d(x, kernel.flip(0, 1, 2)[None, None], padding=(1, 2, 3))
    torch.testing.assert_close(FFTConvolver(kernel)(x), direct, atol=1e-5, rtol=1e-4)


def test_hessian_3d_is_zero_for_linear_volumes():
    z, y, x = torch.meshgrid(*(torch.arange(8.0),) * 3, indexing="ij")
    assert hessian_penalty_3d((z + 2 * y - x)[None, None]) == pytest.approx(0, abs=1e-8)
    assert hessian_penalty_3d(torch.rand(1, 1, 8, 8, 8)) > 0.1


class _Probe(torch.nn.Module):
    """Stage 1 = identity; its frozen copy sees the interleaved stack as a ramp along z."""

    def forward(self, x):
        return x, F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest")

    def denoise(self, full):
        ramp = torch.arange(full.shape[-3], dtype=torch.float32).view(1, 1, -1, 1, 1)
        return ramp.expand_as(full)


def test_gap_amending_term_uses_the_plane_difference_of_the_frozen_copy():
    """With f1(in) == gt exactly, L_den = |0| + |0 - G| and G = z_even - z_odd = -1."""
    target = torch.rand(1, 1, 4, 6, 6)
    full = torch.zeros(1, 1, 8, 6, 6)
    blur = FFTConvolver(torch.ones(1, 1, 1))
    _, with_gar = gap_amending_loss(_Probe(), target, target, full, blur, 0.5, 0.0, (0, 0), 2)
    _, without = gap_amending_loss(
        _Probe(), target, target, full, blur, 0.5, 0.0, (0, 0), 2, gap_amending=False
    )
    assert float(with_gar["denoise"]) == pytest.approx(1.0)
    assert float(without["denoise"]) == pytest.approx(0.0)


def test_background_term_shifts_the_reblurred_output():
    """With the background added, an output of 0 fits a target at the background level."""
    target = torch.full((2, 1, 4, 6, 6), 0.3)
    background = torch.full((2, 1, 1, 1, 1), 0.3)
    blur = FFTConvolver(torch.ones(1, 1, 1))

    class Dark(torch.nn.Module):
        def forward(self, x):
            return x, torch.zeros(x.shape[:-2] + (12, 12))

    args = (Dark(), target, target, target, blur, 0.0, 0.0, (0, 0), 2, False)
    _, fitted = gap_amending_loss(*args, background=background)
    _, plain = gap_amending_loss(*args)
    assert float(fitted["deconv"]) == pytest.approx(0.0)
    assert float(plain["deconv"]) == pytest.approx(2 * 0.3)


def test_background_level_finds_the_dark_level_of_a_noisy_stack():
    rng = np.random.default_rng(0)
    clean = np.full((12, 48, 48), 100.0)
    clean[:, 10:20, 10:40] += 50  # bright structure on a third of the field
    noisy = rng.poisson(clean).astype(np.float32)
    level = background_level(noisy)
    assert 95 < level <= 100  # close, and below the true 100 rather than above


def test_positivity_makes_the_deconvolved_output_non_negative(stack, tmp_path):
    trainer = make_trainer(stack, tmp_path, positivity=True, iterations=2)
    assert 0 < trainer.sampler.backgrounds[0] < 0.5
    trainer.train(progress=False)
    torch.manual_seed(1)
    x = torch.randn(1, 1, 6, 16, 16)
    _, dec = trainer.model.eval()(x)
    assert dec.min() >= 0 and dec.max() > 0
    _, dec = make_trainer(stack, None, positivity=False).model.eval()(x)
    assert dec.min() < 0  # LeakyReLU(0.2) without it, as the reference


def test_halo_covers_the_3d_receptive_field():
    cfg = preset("fast", "3d", **TINY3D)
    torch.manual_seed(0)
    net = ZSDeconvNet3D.from_config(cfg).eval()
    x = torch.rand(1, 1, 40, 48, 48, requires_grad=True)
    _, dec = net(x)
    grad = torch.autograd.grad(dec[0, 0, 20, 48, 48], x)[0][0, 0].abs().numpy()
    reach = np.abs(np.argwhere(grad > 0) - np.array([20, 24, 24])).max(axis=0)
    assert all(0 < r <= h for r, h in zip(reach, rcan_halo(cfg)))


def test_train_resume_export_and_exact_3d_tiling(stack, tmp_path):
    full = make_trainer(stack, tmp_path / "a", iterations=6)
    full.train(progress=False)
    part = make_trainer(stack, tmp_path / "b", iterations=6)
    part.train(progress=False, stop_after=3)
    resumed = make_trainer(stack, tmp_path / "b", iterations=6)
    resumed.load_checkpoint(tmp_path / "b")
    resumed.train(progress=False)
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    model_path = tmp_path / "m3d.onnx"
    export_checkpoint(tmp_path / "a", model_path)
    model = Model(model_path, provider="cpu")
    meta = model.metadata
    assert meta.ndim == 3 and meta.output_scale == (1, 2, 2) and meta.halo == rcan_halo(full.cfg)
    assert meta.input_pixel_size_nm == pytest.approx((160.0, 92.6, 92.6))
    volume = stack[1]["noisy"].astype(np.float32)
    exact = dict(overlap="exact", overlap_z="exact", progress=False)
    untiled = Predictor(model, PredictOptions(tile=None, **exact)).predict_array(volume)
    tiled = Predictor(model, PredictOptions(tile=8, tile_z=4, **exact)).predict_array(volume)
    # the default context: the effective halo measured at export (within 1e-5 of the range)
    effective = Predictor(model, PredictOptions(tile=8, tile_z=4, progress=False))
    assert effective.halo == tuple(meta.effective_halo["halo"])
    for a, b, c in zip(untiled, tiled, effective.predict_array(volume)):
        assert a.shape == b.shape == c.shape
        assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max()
        assert np.abs(a - c).max() <= 1e-5 * np.ptp(a)
    # less context in z than that (--overlap-z) is faster but no longer within it
    short = Predictor(model, PredictOptions(tile=8, tile_z=4, overlap_z=1, progress=False))
    assert short.halo == (1, *meta.effective_halo["halo"][1:])
    assert np.abs(short.predict_array(volume)[1] - untiled[1]).max() > 1e-4 * np.abs(a).max()
    assert load_checkpoint(tmp_path / "a")["z_step_nm"] == 160.0
    assert (tmp_path / "a" / "preview.png").is_file()  # middle plane of the stack


def test_stack_thinner_than_the_crop_is_refused(stack, tmp_path):
    from zsdeconvnet.runtime.errors import InputError

    cfg_sim, out, psf = stack
    with pytest.raises(InputError, match="thinner than the training crop"):
        Trainer(
            preset("fast", "3d", **TINY3D),
            [out["noisy"][:5].astype(np.float32)],
            psf,
            cfg_sim.pixel_nm,
            tmp_path,
            z_step_nm=160.0,
        )
