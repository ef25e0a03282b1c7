"""The wheel `make wheel` builds installs runtime-only in a fresh venv and runs there."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parents[1]


def sh(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)


def test_the_built_wheel_installs_runtime_only_and_runs(tmp_path):
    dist = tmp_path / "dist"
    built = sh(sys.executable, "-m", "build", "--wheel", "--outdir", dist, ROOT)
    assert built.returncode == 0, built.stderr[-2000:]
    warned = built.stdout + built.stderr
    # no setuptools warnings: package data seen as a package, license given as a table
    assert "would be ignored" not in warned and "project.license" not in warned
    (wheel,) = dist.glob("zsdeconvnet-*.whl")
    venv = tmp_path / "venv"
    assert sh(sys.executable, "-m", "venv", venv).returncode == 0
    installed = sh(venv / "bin" / "pip", "install", "-q", wheel)
    assert installed.returncode == 0, installed.stderr[-2000:]
    tool = venv / "bin" / "zsdeconvnet"
    image = tmp_path / "cell.tif"
    tifffile.imwrite(image, np.random.default_rng(0).random((40, 56), dtype=np.float32))
    model = sh(
        venv / "bin" / "python",
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
