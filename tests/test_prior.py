"""The shipped 2D prior: its file, where a run starts (--init), and how it is trained."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from zsdeconvnet.physics.optics import pupil_psf
from zsdeconvnet.physics.psf import check_psf, fwhm_px
from zsdeconvnet.physics.simulate import SimulationConfig, simulate
from zsdeconvnet.runtime.errors import InputError
from zsdeconvnet.training.config import preset
from zsdeconvnet.training.losses import FFTConvolver
from zsdeconvnet.training.prior import BatchConvolver
from zsdeconvnet.training.prior_data import PriorDistribution, PriorSampler, fwhm_range
from zsdeconvnet.training.prior_init import initial_weights, load_prior, prior_problem
from zsdeconvnet.training.priors import PRIOR_2D
from zsdeconvnet.training.trainer import Trainer, sr_psf
from zsdeconvnet.training.unet2d import ZSDeconvNet2D


@pytest.fixture(scope="module")
def sim():
    cfg = SimulationConfig(structure="mixed", photons=10, size=160, seed=3)
    out = simulate(cfg)
    return cfg, out, check_psf(out["psf"], (cfg.pixel_nm, cfg.pixel_nm), 2)


def trainer(sim, pixel_nm=None, **changes):
    cfg_sim, out, psf = sim
    cfg = preset("fast", iterations=2, threads=1, **changes)
    return Trainer(cfg, [out["noisy"].astype(np.float32)], psf, pixel_nm or cfg_sim.pixel_nm, None)


def test_the_shipped_prior_is_weights_only_a_few_mb_with_its_card():
    assert PRIOR_2D.stat().st_size < 5e6
    weights, card = load_prior()
    net = ZSDeconvNet2D.from_config(preset("fast"))
    net.load_state_dict(weights)  # strict: every tensor of the fast preset's network
    for key in ("recipe", "distribution", "iterations", "training_seconds", "hardware"):
        assert key in card
    assert card["total_iterations"] >= 1000 and card["total_acquisitions_seen"] >= 500
    assert card["structure_counts"]["empty"] > 0  # structure-free fields: no invention on noise
    assert "membranes" not in card["structure_counts"]  # held out: the generalisation case
    assert tuple(card["fwhm_sr_px_range"]) == fwhm_range(PriorDistribution(), preset("fast"))


def test_a_prior_file_with_code_or_damage_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pt"
    torch.save({"weights": {"x": Payload()}, "card": "{}"}, evil)
    with pytest.raises(InputError, match="damaged or not a prior"):
        load_prior(evil)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(PRIOR_2D.read_bytes()[:5000])
    with pytest.raises(InputError, match="missing or not a weights file|damaged"):
        load_prior(cut)


def test_auto_and_prior_start_from_the_prior_scratch_does_not(sim):
    weights, _ = load_prior()
    for init, expect in (("auto", "prior"), ("prior", "prior"), ("scratch", "scratch")):
        t = trainer(sim, init=init)
        assert t.cfg.init == expect
        same = all(torch.equal(v, weights[k]) for k, v in t.model.state_dict().items())
        assert same == (expect == "prior")


def test_another_prior_file_is_where_the_run_starts_and_the_model_names_it(sim, tmp_path):
    weights, card = load_prior()
    moved = {k: (v + 0.5 if v.is_floating_point() else v) for k, v in weights.items()}
    mine = tmp_path / "facility_prior.pt"
    torch.save({"weights": moved, "card": json.dumps(card)}, mine)
    t = trainer(sim, init="prior", prior_file=str(mine))
    assert all(torch.equal(v, moved[k]) for k, v in t.model.state_dict().items())
    from zsdeconvnet.training.networks import metadata_from_state

    meta = metadata_from_state(t.state(), t.cfg)
    assert meta.training["init"] == "2D prior facility_prior.pt, fine-tuned"
    with pytest.raises(InputError, match="missing.*give --prior a file written by"):
        trainer(sim, init="prior", prior_file=str(tmp_path / "absent.pt"))
    with pytest.raises(InputError, match="--init scratch starts from random weights"):
        preset("fast", init="scratch", prior_file=str(mine))


def test_a_psf_outside_the_range_or_another_network_falls_back_or_is_refused(sim, caplog):
    cfg_sim = sim[0]
    with pytest.raises(InputError, match="outside the .* px the prior was trained on"):
        trainer(sim, pixel_nm=cfg_sim.pixel_nm * 4, init="prior")
    with caplog.at_level(logging.WARNING):
        t = trainer(sim, pixel_nm=cfg_sim.pixel_nm * 4, init="auto")
    assert t.cfg.init == "scratch" and "training from scratch" in caplog.text
    with pytest.raises(InputError, match="base_channels 8 \\(prior: 16\\)"):
        trainer(sim, init="prior", base_channels=8)
    _, card = load_prior()
    psf = np.ones((1, 1))
    assert "2D widefield" in prior_problem(preset("fast", mode="sim2d"), card, psf)
    assert initial_weights(preset("fast", mode="3d"), psf) is None  # auto: 3D from scratch
    with pytest.raises(InputError):
        preset("fast", init="pretrained")


def test_the_range_is_stated_in_the_measure_training_applies(sim):
    cfg_sim, out, psf = sim
    width = fwhm_px(sr_psf(psf, cfg_sim.pixel_nm, preset("fast")).data)
    lo, hi = fwhm_range(PriorDistribution(), preset("fast"))
    assert lo < width < hi  # NA 1.49, 525 nm, 62.6 nm pixels: inside
    airy = 0.51 * cfg_sim.wavelength_nm / cfg_sim.na / (cfg_sim.pixel_nm / 2)
    assert width == pytest.approx(airy, rel=0.05)


def test_batch_convolver_is_each_samples_own_psf():
    rng = np.random.default_rng(0)
    kernels = [
        pupil_psf(size, 31.3, na, 525)[0].astype(np.float32)
        for size, na in ((9, 1.4), (15, 1.0), (5, 1.49))
    ]
    x = torch.from_numpy(rng.random((3, 1, 40, 36)).astype(np.float32))
    got = BatchConvolver(kernels)(x)
    for i, k in enumerate(kernels):
        want = FFTConvolver(torch.from_numpy(k))(x[i : i + 1])
        torch.testing.assert_close(got[i : i + 1], want, atol=1e-5, rtol=1e-4)


def test_prior_batches_come_from_distinct_acquisitions_and_the_pool_rolls():
    cfg = preset("fast", patch_size=32, pad_xy=8)
    dist = PriorDistribution(size=64)
    sampler = PriorSampler(cfg, np.random.default_rng(0), dist, pool=4, refresh_every=1)
    x, y, chosen = sampler.batch(3)
    assert x.shape == y.shape == (3, 1, 32, 32) and len({id(a) for a in chosen}) == 3
    sampler.batch(3)
    assert len(sampler.drawn) == 6
    assert len({d["fwhm_sr_px"] for d in sampler.drawn}) > 1
    json.dumps(sampler.drawn)  # what the model card counts is plain data


def _texture_after(
    init: str, raw: np.ndarray, psf, iterations: int, run_dir, whole: bool = False
) -> float:
    """Blank texture of the deconvolved output over the image's blank background (``whole``:
    over the whole image, for pure noise) after a run of the fast preset, exported and
    restored by the runtime as ``benchmarks/prior_real_images.py`` measures it (whole-frame
    normalisation, reflect padding: a bare forward pass adds zero-padded borders that dominate
    the measure)."""
    from zsdeconvnet.export.checkpoint import export_checkpoint
    from zsdeconvnet.physics.metrics import blank_mask, blank_texture
    from zsdeconvnet.runtime.model import Model
    from zsdeconvnet.runtime.predict import PredictOptions, Predictor

    cfg = preset("fast", init=init, iterations=iterations, threads=2, seed=1)
    t = Trainer(cfg, [raw], psf, 325.0, run_dir)
    t.train(progress=False)
    t.save_checkpoint()
    export_checkpoint(run_dir, run_dir / "model.onnx")
    model = Model(run_dir / "model.onnx", provider="cpu")
    _, output = Predictor(model, PredictOptions(progress=False)).predict_array(raw)
    mask = np.ones(raw.shape, bool) if whole else blank_mask(raw)
    return blank_texture(output, raw, mask)


@pytest.mark.slow
def test_the_prior_paints_no_structure_into_the_blank_background_of_a_real_image(tmp_path):
    """stardist's nuclei (whole frame) with its assumed optics (NA 0.75, 325 nm pixels), 35
    iterations each (what 60 s buys on 2 AVX2 cores): over blank background the fine-tuned
    prior's output varies no more than the scratch output. After only 1-15 iterations it does
    (scratch's output is still flat then), and so it does after 60 s on a CPU with native bf16
    (about 290 iterations, scratch's then flatter) and on pure noise (the test below):
    benchmarks/RESULTS.md, "Pretrained prior", reports them."""
    import tifffile
    from zsdeconvnet.physics.optics import make_psf
    from zsdeconvnet.training.sample_data import stardist_nuclei

    try:
        raw = tifffile.imread(stardist_nuclei()).astype(np.float32)
    except InputError:
        pytest.skip("stardist's image is not installed (make installs it)")
    psf = check_psf(make_psf("pupil", 9, 325, 0.75, 460, 1.0)[0], (325.0, 325.0), 2)
    prior = _texture_after("prior", raw, psf, 35, tmp_path / "prior")
    scratch = _texture_after("scratch", raw, psf, 35, tmp_path / "scratch")
    assert prior <= scratch, (prior, scratch)


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="known gap of the priors issue: on pure noise the fine-tuned prior keeps more grain "
    "than scratch at the same budget (benchmarks/RESULTS.md, 'blank texture')",
)
def test_the_prior_paints_no_structure_into_pure_noise(tmp_path):
    """A pure-noise image (camera offset 100, Poisson background of 10 photons, read noise 1.5
    e-; the stardist optics), 35 iterations each (what 60 s buys on 2 AVX2 cores): the
    fine-tuned prior's output should vary no more than the scratch output
    (``benchmarks/prior_real_images.py``, "pure noise"). Not yet so: strict, so a prior that
    closes the gap turns this into a failure to be promoted to a plain test."""
    from zsdeconvnet.physics.optics import make_psf

    rng = np.random.default_rng(1)
    noise = rng.poisson(10.0, (256, 256)) + rng.normal(0, 1.5, (256, 256)) + 100
    raw = np.round(noise).astype(np.float32)
    psf = check_psf(make_psf("pupil", 9, 325, 0.75, 460, 1.0)[0], (325.0, 325.0), 2)
    prior = _texture_after("prior", raw, psf, 35, tmp_path / "prior", whole=True)
    scratch = _texture_after("scratch", raw, psf, 35, tmp_path / "scratch", whole=True)
    assert prior <= scratch, (prior, scratch)
