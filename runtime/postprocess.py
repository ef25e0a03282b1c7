"""Optional post-processing of restored frames.

Fourier damping (METHOD.md section 4): sCMOS fixed-pattern noise makes column or row stripes,
whose energy lies on the ``kx`` and ``ky`` axes of the spectrum. In a narrow band (3 px wide)
along both axes, away from the centre where the image's own low frequencies live, each
coefficient is scaled down to the typical magnitude of its neighbours just outside the band:
stripes (outliers there) are removed, ordinary image content is left almost untouched.
"""

from __future__ import annotations

import numpy as np


def damp_stripes(frame: np.ndarray, width: int = 3, keep_fraction: float = 0.05) -> np.ndarray:
    """Remove fixed-pattern stripes from one ``YX`` frame.

    Parameters
    ----------
    frame : numpy.ndarray
        One frame, ``YX``.
    width : int
        Band width in frequency pixels (odd; 3 as the reference).
    keep_fraction : float
        Frequencies below this fraction of the spectrum's extent along the band are kept.

    Returns
    -------
    numpy.ndarray
        float32, same shape; the mean is preserved.
    """
    frame = np.asarray(frame, np.float64)
    half = width // 2
    spectrum = np.fft.fft2(frame)
    # column stripes live on the ky = 0 row; row stripes on the kx = 0 column
    _damp_rows_symmetric(spectrum, half, keep_fraction)
    transposed = np.ascontiguousarray(spectrum.T)
    _damp_rows_symmetric(transposed, half, keep_fraction)
    return np.fft.ifft2(transposed.T).real.astype(np.float32)


def _damp_rows_symmetric(spectrum: np.ndarray, half: int, keep_fraction: float) -> None:
    n_rows, n_cols = spectrum.shape
    band = [i % n_rows for i in range(-half, half + 1)]
    ring = [i % n_rows for i in (*range(half + 1, half + 4), *range(-half - 3, -half))]
    reference = np.abs(spectrum[ring]).mean(axis=0)
    distance = np.abs(np.fft.fftfreq(n_cols))  # fraction of the sampling rate, 0..0.5
    far = distance > keep_fraction / 2
    for row in band:
        magnitude = np.abs(spectrum[row])
        factor = np.where(far, np.minimum(1.0, reference / np.maximum(magnitude, 1e-30)), 1.0)
        spectrum[row] *= factor
