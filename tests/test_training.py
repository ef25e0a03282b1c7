"""Network, loss and trainer: the method's invariants, determinism, resume, export parity."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_models import TINY_NET
from torch.nn import functional as F
from zsdeconvnet.physics.optics import pupil_psf
from zsdeconvnet.physics.psf import check_psf
from zsdeconvnet.physics.simulate import SimulationConfig, simulate
from zsdeconvnet.runtime.errors import InputError
from zsdeconvnet.training.config import TrainConfig, preset
from zsdeconvnet.training.losses import FFTConvolver, hessian_penalty
from zsdeconvnet.training.trainer import Trainer, load_checkpoint, sr_psf
from zsdeconvnet.training.unet2d import ZSDeconvNet2D, model_halo

TINY = dict(
    **TINY_NET,
    lr=1e-3,
    schedule="cosine",
    checkpoint_every=5,
)


@pytest.fixture(scope="module")
def sim():
    cfg = SimulationConfig(structure="mixed", photons=20, size=64, seed=2)
    out = simulate(cfg)
    return cfg, out, check_psf(out["psf"], (cfg.pixel_nm, cfg.pixel_nm), 2)


def make_trainer(sim, run_dir, **changes):
    cfg_sim, out, psf = sim
    cfg = preset("fast", **{**TINY, **changes})
    return Trainer(cfg, [out["noisy"].astype(np.float32)], psf, cfg_sim.pixel_nm, run_dir)


def test_fft_convolution_is_a_true_convolution():
    rng = np.random.default_rng(0)
    kernel = torch.from_numpy(rng.random((7, 5)).astype(np.float32))
    x = torch.from_numpy(rng.random((2, 1, 20, 24)).astype(np.float32))
    direct = F.conv2d(x, kernel.flip(0, 1)[None, None], padding=(3, 2))  # conv2d correlates
    torch.testing.assert_close(FFTConvolver(kernel)(x), direct, atol=1e-5, rtol=1e-4)


def test_reblurring_the_sr_ground_truth_reproduces_the_camera_image(sim):
    """The forward model used in the loss matches the simulator: slope ~1, no shift."""
    cfg, out, psf = sim
    blur = FFTConvolver(torch.from_numpy(sr_psf(psf, cfg.pixel_nm, preset("fast")).data))
    gt = torch.from_numpy(out["gt"])[None, None]
    camera = F.avg_pool2d(blur(gt), 2)[0, 0].numpy() * 4  # pooling averages, camera sums
    clean = out["clean"]
    inner = (slice(8, -8),) * 2
    slope = np.polyfit(camera[inner].ravel(), clean[inner].ravel(), 1)[0]
    assert slope == pytest.approx(1.0, abs=0.08)
    shifts = [
        np.corrcoef(np.roll(camera, s, axis=1)[inner].ravel(), clean[inner].ravel())[0, 1]
        for s in (-1, 0, 1)
    ]
    assert int(np.argmax(shifts)) == 1 and shifts[1] > 0.97


def test_hessian_penalty_is_zero_for_planes_and_positive_for_noise():
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    assert hessian_penalty((2 * xx + 3 * yy)[None, None]) == pytest.approx(0, abs=1e-8)
    assert hessian_penalty(torch.rand(1, 1, 16, 16)) > 0.1


@pytest.mark.parametrize("tail", ["nearest", "shuffle"])
def test_halo_covers_the_receptive_field(tail):
    cfg = preset("fast", **TINY, sr_tail=tail)
    torch.manual_seed(0)  # a fixed draw: with some draws the output ReLU is dead at the probe
    net = ZSDeconvNet2D.from_config(cfg).eval()
    x = torch.rand(1, 1, 96, 96, requires_grad=True)
    _, dec = net(x)
    grad = torch.autograd.grad(dec[0, 0, 96, 96], x)[0][0, 0].abs().numpy()
    extent = np.abs(np.argwhere(grad > 0) - 48).max()
    assert 0 < extent <= model_halo(cfg)


def test_sr_output_is_alive_after_a_few_steps(sim, tmp_path):
    trainer = make_trainer(sim, tmp_path, iterations=5)
    model = trainer.train(progress=False)
    with torch.no_grad():
        _, dec = model.eval()(torch.from_numpy(trainer.parity_crop[None, None]))
    assert dec.std() > 0 and (dec > 0).float().mean() > 0.5


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_same_seed_same_result_and_resume_equals_uninterrupted(sim, tmp_path, backend):
    run = dict(iterations=10, pair_backend=backend)
    full = make_trainer(sim, tmp_path / "a", **run).train(progress=False)
    again = make_trainer(sim, tmp_path / "b", **run).train(progress=False)
    first = make_trainer(sim, tmp_path / "c", **run)
    assert first.torch_pairs == (backend == "torch")
    first.train(progress=False, stop_after=5)  # "killed" after the checkpoint at 5
    resumed = make_trainer(sim, tmp_path / "c", **run)
    resumed.load_checkpoint(tmp_path / "c")
    assert resumed.iteration == 5
    final = resumed.train(progress=False)
    for (name, a), b, c in zip(
        full.state_dict().items(), again.state_dict().values(), final.state_dict().values()
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
        torch.testing.assert_close(a, c, rtol=0, atol=0, msg=name)
    log = (tmp_path / "c" / "loss.csv").read_text().splitlines()
    assert len(log) == 11 and log[-1].startswith("10,")


def test_checkpoint_is_data_only(sim, tmp_path):
    trainer = make_trainer(sim, tmp_path, iterations=5)
    trainer.train(progress=False)
    state = load_checkpoint(tmp_path)
    assert state["iteration"] == 5
    evil = tmp_path / "evil.pt"

    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Payload()}, evil)
    with pytest.raises(InputError, match="cannot be loaded safely"):
        load_checkpoint(evil)


def test_config_round_trip_and_validation(tmp_path):
    cfg = preset("paper", seed=3)
    cfg.save(tmp_path / "c.json")
    assert TrainConfig.load(tmp_path / "c.json") == cfg
    with pytest.raises(InputError, match="multiple of 8"):
        preset("paper", patch_size=100)
    (tmp_path / "bad.json").write_text('{"nonsense": 1}')
    with pytest.raises(InputError, match="unknown fields"):
        TrainConfig.load(tmp_path / "bad.json")


def test_image_smaller_than_a_patch_is_refused(sim, tmp_path):
    cfg_sim, out, psf = sim
    with pytest.raises(InputError, match="smaller than the training patch"):
        Trainer(
            preset("fast", **TINY),
            [out["noisy"][:20, :20].astype(np.float32)],
            psf,
            cfg_sim.pixel_nm,
            tmp_path,
        )


def test_psf_resampled_to_half_pixel(sim):
    cfg, _, psf = sim
    sr = sr_psf(psf, cfg.pixel_nm, preset("fast"))
    assert sr.pixel_size_nm == pytest.approx((cfg.pixel_nm / 2,) * 2)
    direct = pupil_psf(
        sr.data.shape[0], cfg.pixel_nm / 2, cfg.na, cfg.wavelength_nm, cfg.refractive_index
    )[0]
    direct /= direct.sum()
    assert np.abs(sr.data - direct).max() < 0.02 * direct.max()


def test_test_time_adaptation_fine_tunes_per_frame(sim, tmp_path):
    from zsdeconvnet.training.adapt import adapt_and_restore

    trainer = make_trainer(sim, tmp_path, iterations=5)
    trainer.train(progress=False)
    frame = sim[1]["noisy"].astype(np.float32)
    ((d0, s0),) = adapt_and_restore(tmp_path, [frame], iterations=0)
    ((d1, s1),) = adapt_and_restore(tmp_path, [frame], iterations=3)
    assert s0.shape == s1.shape == (128, 128) and d0.shape == (64, 64)
    assert not np.allclose(s0, s1)  # the copy was really fine-tuned
    assert load_checkpoint(tmp_path)["iteration"] == 5  # the trained model is untouched


def test_configs_of_older_checkpoints_still_load():
    record = json.loads(preset("fast").to_json())
    record["preview_every"] = 0  # a field retired after 0.1.0 checkpoints were written
    assert TrainConfig.from_json(json.dumps(record)) == preset("fast")


def test_the_sub_pixel_tail_keeps_sizes_and_exports_exactly(tmp_path):
    """The pixel-shuffle tail gives the same output grid as the paper's tail, and its ONNX
    export (DepthToSpace) reproduces torch."""
    from zsdeconvnet.export.onnx import export_model
    from zsdeconvnet.runtime.model import Model
    from zsdeconvnet.training.networks import metadata_from_state

    cfg = preset("fast", **TINY, sr_tail="shuffle")
    torch.manual_seed(0)
    net = ZSDeconvNet2D.from_config(cfg).eval()
    x = torch.rand(2, 1, 48, 64)
    den, dec = net(x)
    assert den.shape == (2, 1, 48, 64) and dec.shape == (2, 1, 96, 128)
    state = {"iteration": 0, "psf": torch.zeros(3, 3), "pixel_size_nm": 65.0}
    path = tmp_path / "shuffle.onnx"
    export_model(net, metadata_from_state(state, cfg), path, x[:1].numpy())
    out = Model(path, provider="cpu").run(x.numpy())
    np.testing.assert_allclose(out[1], dec.detach().numpy(), atol=1e-5)
    assert Model(path, provider="cpu").metadata.halo == (model_halo(cfg),) * 2
