"""The wheel `make wheel` builds installs in fresh venvs: runtime only, and with the physics
extra (no torch), and each runs what it promises."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

ROOT = Path(__file__).resolve().parents[1]


def sh(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    # built from a copy: setuptools writes build/ and *.egg-info beside the sources
    source = tmp / "source"
    skip = shutil.ignore_patterns(".*", "build", "dist", "*.egg-info", "demo-output", "__pycache__")
    shutil.copytree(ROOT, source, ignore=skip)
    built = sh(sys.executable, "-m", "build", "--wheel", "--outdir", tmp / "dist", source)
    assert built.returncode == 0, built.stderr[-2000:]
    warned = built.stdout + built.stderr
    # no setuptools warnings: package data seen as a package, license given as a table
    assert "would be ignored" not in warned and "project.license" not in warned
    (found,) = (tmp / "dist").glob("zsdeconvnet-*.whl")
    return found


def venv_with(tmp_path: Path, requirement: str) -> Path:
    venv = tmp_path / "venv"
    assert sh(sys.executable, "-m", "venv", venv).returncode == 0
    installed = sh(venv / "bin" / "pip", "install", "-q", requirement)
    assert installed.returncode == 0, installed.stderr[-2000:]
    return venv / "bin"


def test_the_built_wheel_installs_runtime_only_and_runs(wheel, tmp_path):
    bin_ = venv_with(tmp_path, str(wheel))
    tool = bin_ / "zsdeconvnet"
    image = tmp_path / "cell.tif"
    tifffile.imwrite(image, np.random.default_rng(0).random((40, 56), dtype=np.float32))
    model = sh(
        bin_ / "python",
        "-c",
        "import pathlib, zsdeconvnet.models as m; "
        "print(pathlib.Path(m.__file__).parent / 'nuclei2d.onnx')",
    ).stdout.strip()
    out = tmp_path / "sr.tif"
    ran = sh(tool, "predict", model, image, "-o", out, "--quiet")
    assert ran.returncode == 0, ran.stderr
    assert tifffile.imread(out).shape == (80, 112)
    (tmp_path / "ij").mkdir()
    macros = sh(tool, "fiji", "install", "--imagej-dir", tmp_path / "ij", "--python", "x")
    assert macros.returncode == 0, macros.stderr  # the .ijm files are in the wheel
    assert len(list((tmp_path / "ij").rglob("*.ijm"))) == 2
    for name in ("demo", "train", "psf"):
        hinted = sh(tool, name, "x")
        assert hinted.returncode == 1 and "Traceback" not in hinted.stderr, hinted.stderr
        assert "not installed; install it with: pip install" in hinted.stderr


def test_the_physics_extra_gives_psf_simulate_and_evaluate_without_torch(wheel, tmp_path):
    bin_ = venv_with(tmp_path, f"{wheel}[physics]")
    assert sh(bin_ / "python", "-c", "import torch").returncode != 0  # no torch in this venv
    tool = bin_ / "zsdeconvnet"
    psf = tmp_path / "psf.tif"
    made = sh(tool, "psf", "-o", psf, "--na", "1.4", "--wavelength", "525", "--pixel-size", "65")
    assert made.returncode == 0, made.stderr
    sim = tmp_path / "sim"
    simulated = sh(tool, "simulate", "-o", sim, "--structure", "beads", "--size", "64")
    assert simulated.returncode == 0, simulated.stderr
    scored = sh(tool, "evaluate", sim / "noisy.tif", "--reference", sim / "reference.tif")
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["psnr"] > 0
    script = (
        "import tifffile\n"
        "from zsdeconvnet.physics.richardson_lucy import rl_iterates\n"
        f"img, psf = tifffile.imread(r'{sim / 'noisy.tif'}'), tifffile.imread(r'{psf}')\n"
        "print(sum(1 for _ in rl_iterates(img, psf, background=0.0, max_iter=3)))\n"
    )
    rl = sh(bin_ / "python", "-c", script)
    assert rl.returncode == 0 and rl.stdout.strip() == "3", rl.stderr
