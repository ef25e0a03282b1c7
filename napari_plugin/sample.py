"""Sample data: the project's simulator (widefield, Poisson-Gaussian noise, known ground truth)."""

from __future__ import annotations


def simulated_widefield(structure: str = "mixed", photons: float = 5.0, size: int = 256):
    """Noisy camera image and its reference (a 2x better microscope on the 2x grid) as layers.

    Scales are in micrometres per pixel (62.6 nm camera pixels, NA 1.49, 525 nm).
    """
    from ..physics.simulate import SimulationConfig, simulate

    cfg = SimulationConfig(structure=structure, photons=photons, size=size, seed=0)
    images = simulate(cfg)
    px = cfg.pixel_nm / 1000
    return [
        (
            images["noisy"].astype("float32"),
            {"name": f"simulated {structure}, {photons:g} photons", "scale": (px, px)},
            "image",
        ),
        (
            images["reference"].astype("float32"),
            {
                "name": "reference (2x grid)",
                "scale": (px / 2, px / 2),
                "translate": (-px / 4, -px / 4),
                "visible": False,
            },
            "image",
        ),
    ]
