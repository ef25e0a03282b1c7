"""OME-Zarr in and out: lazy reading, chunk-by-chunk writing that survives a killed run.

Reading accepts an OME-Zarr image group (NGFF 0.4 or 0.5: the first multiscale's full-resolution
level, its axes and its ``scale`` transform) or a bare zarr array (axes guessed like a TIFF
without metadata). Nothing is loaded until a region is indexed.

Writing goes to a hidden ``.NAME.partial`` folder beside the destination, renamed to ``NAME``
only when every chunk and every pyramid level is written, so a complete-looking output is a
complete output. Each finished unit of work leaves an empty marker file in the partial folder;
a rerun with ``resume`` skips marked units and redoes the rest (a unit killed half-way has no
marker, so its chunks are written again). Multiscale metadata is written with ``ome-zarr``
(NGFF 0.5, zarr v3); pyramid levels halve y and x by 2x2 averaging.

zarr and ome-zarr are optional (the ``distributed`` extra); the runtime imports them only here.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError, describe
from .io import Image

#: OME-Zarr axis units -> nanometres
_UNITS_NM = {
    "nanometer": 1.0,
    "micrometer": 1e3,
    "millimeter": 1e6,
    "meter": 1e9,
    "angstrom": 0.1,
}
_AXIS_TYPES = {"T": "time", "C": "channel", "Z": "space", "Y": "space", "X": "space"}
MARKERS = "zsdeconvnet-done"
#: pyramid levels are added while the smaller of y and x stays at least this large
PYRAMID_MIN_SIZE = 256


def _zarr():
    try:
        import zarr
    except ImportError:
        raise InputError(
            "zarr input or output needs the distributed extra: "
            "pip install 'zsdeconvnet[distributed]'"
        ) from None
    return zarr


def is_zarr(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a zarr store (by suffix, or a folder holding zarr metadata)."""
    path = Path(path)
    if path.suffix.lower() == ".zarr":
        return True
    return path.is_dir() and any((path / n).exists() for n in ("zarr.json", ".zgroup", ".zarray"))


class FrameView:
    """One frame of a larger array (leading indices fixed), indexable like a numpy array.

    zarr arrays have no lazy views; this lets the tiling code read and write one frame of a
    ``TYX``/``TZYX`` zarr (or numpy) array without loading it.
    """

    def __init__(self, array, index: tuple[int, ...]):
        self.array = array
        self.index = tuple(index)
        self.shape = tuple(array.shape[len(self.index) :])
        self.ndim = len(self.shape)
        self.size = int(np.prod(self.shape))
        self.dtype = array.dtype
        chunks = getattr(array, "chunks", None)
        self.chunks = tuple(chunks[len(self.index) :]) if chunks else None

    def _key(self, key) -> tuple:
        return self.index + (key if isinstance(key, tuple) else (key,))

    def __getitem__(self, key):
        return np.asarray(self.array[self._key(key)])

    def __setitem__(self, key, value) -> None:
        self.array[self._key(key)] = value

    def __array__(self, dtype=None, copy=None):
        out = self[(slice(None),) * self.ndim]
        return out if dtype is None else out.astype(dtype)


def frame_of(data, index: tuple[int, ...]):
    """Frame ``index`` of ``data``: a numpy view, or a lazy :class:`FrameView` of a zarr array."""
    return data[index] if isinstance(data, np.ndarray) else FrameView(data, index)


def _multiscale(attrs: dict) -> dict | None:
    ome = attrs.get("ome", attrs)
    scales = ome.get("multiscales")
    return scales[0] if scales else None


def read_zarr(path: str | os.PathLike) -> Image:
    """Open an OME-Zarr image (or a bare zarr array) lazily.

    Returns
    -------
    Image
        ``data`` is a zarr array (read on indexing), ``axes`` in tifffile letters, pixel sizes
        from the first dataset's ``scale`` transform when the axes carry a known length unit.
    """
    zarr = _zarr()
    path = Path(path)
    if not path.exists():
        raise InputError(f"{describe(path)} does not exist; check the path")
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as err:  # zarr raises several types for a folder that is not a store
        raise InputError(
            f"{describe(path)} is not a readable zarr store ({str(err)[:120]}); give an "
            "OME-Zarr image"
        ) from None
    sizes: dict[str, float] = {}
    if isinstance(node, zarr.Array):
        data = node
        axes = {2: "YX", 3: "TYX", 4: "TZYX", 5: "TCZYX"}.get(data.ndim)
        if axes is None:
            raise InputError(f"{describe(path)} has {data.ndim} dimensions; give 2 to 5")
        return Image(data=data, axes=axes, pixel_size_nm=sizes, path=path)
    meta = _multiscale(dict(node.attrs))
    if meta is None:
        raise InputError(
            f"{describe(path)} is a zarr group without OME multiscales metadata; give an "
            "OME-Zarr image (or the path of one of its arrays)"
        )
    try:
        dataset = meta["datasets"][0]
        data = node[dataset["path"]]
        names = [a["name"] if isinstance(a, dict) else str(a) for a in meta["axes"]]
        units = [a.get("unit") if isinstance(a, dict) else None for a in meta["axes"]]
    except (KeyError, IndexError, TypeError) as err:
        raise InputError(
            f"{describe(path)} has malformed OME multiscales metadata ({err!r}); rewrite it"
        ) from None
    axes = "".join(n.upper() for n in names)
    if len(axes) != data.ndim or not set(axes) <= set("TCZYX"):
        raise InputError(
            f"{describe(path)} has axes {names} for a {data.ndim}-D array; expected names "
            "among t, c, z, y, x"
        )
    scale = next(
        (t["scale"] for t in dataset.get("coordinateTransformations", []) if t["type"] == "scale"),
        None,
    )
    if scale is not None:
        for letter, unit, value in zip(axes, units, scale):
            factor = _UNITS_NM.get(str(unit).lower())
            if letter in "ZYX" and factor and float(value) > 0:
                sizes[letter] = float(value) * factor
    if not axes.endswith("YX"):
        raise InputError(f"{describe(path)} has axes {axes!r}; the last two must be y and x")
    return Image(data=data, axes=axes, pixel_size_nm=sizes, path=path)


def pyramid_shapes(shape: Sequence[int]) -> list[tuple[int, ...]]:
    """Level shapes: y and x halved per level while both stay >= ``PYRAMID_MIN_SIZE``."""
    shapes = [tuple(shape)]
    while min(shapes[-1][-2:]) // 2 >= PYRAMID_MIN_SIZE:
        last = shapes[-1]
        shapes.append(last[:-2] + (last[-2] // 2, last[-1] // 2))
    return shapes


def _ome_axes(axes: str) -> list[dict]:
    out = []
    for letter in axes:
        entry = {"name": letter.lower(), "type": _AXIS_TYPES[letter]}
        if letter in "ZYX":
            entry["unit"] = "micrometer"
        out.append(entry)
    return out


def _transforms(axes: str, pixel_nm: dict[str, float], offset_px: dict[str, float], level: int):
    """Scale and translation (micrometres) of pyramid ``level``; pixel centres stay put."""
    scale, shift = [], []
    for letter in axes:
        size = pixel_nm.get(letter, 1e3) / 1e3 if letter in "ZYX" else 1.0
        factor = 2**level if letter in "YX" else 1
        scale.append(size * factor)
        # a 2^k block average is centred (2^k - 1) / 2 pixels in from its first pixel
        shift.append(size * (offset_px.get(letter, 0.0) + (factor - 1) / 2))
    return [{"type": "scale", "scale": scale}, {"type": "translation", "translation": shift}]


@dataclass
class ZarrOutput:
    """An OME-Zarr image being written (in ``partial`` until :meth:`finish`).

    Attributes
    ----------
    path : Path
        Final destination.
    partial : Path
        Where it is written until complete.
    levels : list of tuple
        Shape of every pyramid level (level 0 first).
    chunks : tuple of int
        Chunk shape of level 0.
    """

    path: Path
    partial: Path
    levels: list[tuple[int, ...]]
    chunks: tuple[int, ...]

    def array(self, level: int = 0):
        """The zarr array of ``level`` (opened read-write)."""
        return _zarr().open_array(str(self.partial / str(level)), mode="r+")

    def _marker(self, key: str) -> Path:
        return self.partial / MARKERS / key

    def done(self, key: str) -> bool:
        """Whether the unit of work ``key`` finished in this or an earlier run."""
        return self._marker(key).exists()

    def mark(self, key: str) -> None:
        """Record that the unit of work ``key`` is completely written."""
        self._marker(key).touch()

    def finish(self) -> None:
        """Drop the markers and move the finished image to its destination."""
        shutil.rmtree(self.partial / MARKERS, ignore_errors=True)
        if self.path.exists():  # --overwrite of a previous output
            shutil.rmtree(self.path)
        os.replace(self.partial, self.path)


def partial_path(path: Path) -> Path:
    """The hidden working folder of a zarr output (fixed name, so a rerun finds it)."""
    return path.with_name(f".{path.name}.partial")


def check_zarr_output(path: str | os.PathLike, overwrite: bool, resume: bool) -> Path:
    """Fail early when a zarr output exists or a previous run's partial one is in the way."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"output folder {describe(folder)} does not exist; create it first")
    if path.exists() and not overwrite:
        raise InputError(f"output {describe(path)} already exists; use --overwrite to replace it")
    if partial_path(path).exists() and not (resume or overwrite):
        raise InputError(
            f"a previous run left {describe(partial_path(path))} unfinished; use --resume to "
            "finish it or --overwrite to start again"
        )
    return path


def create_zarr_output(
    path: str | os.PathLike,
    shape: Sequence[int],
    chunks: Sequence[int],
    axes: str,
    pixel_size_nm: dict[str, float],
    offset_px: dict[str, float],
    job: dict,
    resume: bool,
    name: str,
    dtype: str = "float32",
) -> ZarrOutput:
    """Create (or, with ``resume``, reopen) the partial OME-Zarr for a job.

    Parameters
    ----------
    path : path-like
        Destination ``.zarr`` folder.
    shape, chunks : sequence of int
        Level-0 array shape and chunk shape (one writer per chunk).
    axes : str
        tifffile letters of the array axes.
    pixel_size_nm : dict
        Level-0 pixel size per spatial axis letter (nm).
    offset_px : dict
        Position of the first pixel centre, in level-0 pixels, per axis letter (the 2x output's
        first pixel centre sits a quarter of an input pixel before the input's).
    job : dict
        What produced it (model, input, options): a resumed run must match it exactly.
    resume : bool
        Reopen a matching partial output instead of starting again.
    name : str
        Image name in the multiscales metadata.
    dtype : str
        Array data type (restored images are float32; raw camera frames keep theirs).
    """
    zarr = _zarr()
    from ome_zarr.format import FormatV05
    from ome_zarr.writer import write_multiscales_metadata

    path = Path(path)
    partial = partial_path(path)
    levels = pyramid_shapes(shape)
    out = ZarrOutput(path, partial, levels, tuple(int(c) for c in chunks))
    job_json = json.loads(json.dumps(job))
    if partial.exists() and resume:
        try:
            found = dict(zarr.open_group(str(partial), mode="r").attrs).get("zsdeconvnet", {})
        except Exception:  # killed before its metadata was written: start again
            found = {}
        if found.get("job") == job_json:
            return out
        if found:
            raise InputError(
                f"{describe(partial)} was started by a different job (model, input or options "
                "differ); use --overwrite to start again"
            )
    if partial.exists():
        shutil.rmtree(partial)
    root = zarr.open_group(str(partial), mode="w", zarr_format=3)
    datasets = []
    for level, level_shape in enumerate(levels):
        level_chunks = tuple(min(c, s) for c, s in zip(out.chunks, level_shape))
        root.create_array(
            str(level), shape=level_shape, chunks=level_chunks, dtype=dtype, fill_value=0
        )
        datasets.append(
            {
                "path": str(level),
                "coordinateTransformations": _transforms(axes, pixel_size_nm, offset_px, level),
            }
        )
    write_multiscales_metadata(
        root, datasets=datasets, fmt=FormatV05(), axes=_ome_axes(axes), name=name
    )
    root.attrs["zsdeconvnet"] = {"job": job_json}
    (partial / MARKERS).mkdir()
    return out


def downsample_chunk(out: ZarrOutput, level: int, box: tuple[slice, ...]) -> None:
    """Write ``box`` of pyramid ``level`` as 2x2 means of ``level - 1`` (y and x)."""
    source = out.array(level - 1)
    src = box[:-2] + tuple(slice(2 * s.start, 2 * s.stop) for s in box[-2:])
    block = np.asarray(source[src], np.float32)
    h, w = block.shape[-2] // 2, block.shape[-1] // 2
    block = block[..., : 2 * h, : 2 * w].reshape(block.shape[:-2] + (h, 2, w, 2))
    out.array(level)[box] = block.mean(axis=(-3, -1), dtype=np.float64).astype(np.float32)


def level_chunks(out: ZarrOutput, level: int) -> list[tuple[slice, ...]]:
    """Chunk-aligned boxes covering ``level`` (one box per chunk of y and x, all frames)."""
    shape = out.levels[level]
    chunks = tuple(min(c, s) for c, s in zip(out.chunks, shape))
    ranges = [[slice(i, min(i + c, n)) for i in range(0, n, c)] for n, c in zip(shape, chunks)]
    boxes: list[tuple[slice, ...]] = [()]
    for axis_ranges in ranges:
        boxes = [b + (r,) for b in boxes for r in axis_ranges]
    return boxes
