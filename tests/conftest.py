"""Shared fixtures: tiny exported models and small TIFF images."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import build_tiny  # noqa: E402


@pytest.fixture(scope="session")
def model2d(tmp_path_factory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("models") / "tiny2d.onnx", ndim=2)


@pytest.fixture(scope="session")
def model3d(tmp_path_factory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("models") / "tiny3d.onnx", ndim=3)


@pytest.fixture
def image2d(tmp_path) -> Path:
    rng = np.random.default_rng(1)
    data = (100 + 50 * rng.random((45, 61))).astype(np.float32)
    path = tmp_path / "cell.tif"
    tifffile.imwrite(
        path,
        data,
        imagej=True,
        resolution=(1 / 0.065, 1 / 0.065),
        metadata={"unit": "um", "axes": "YX"},
    )
    return path
