"""TIFF / OME-TIFF / ImageJ-TIFF reading and writing with axes and pixel sizes.

Images are kept as ``(array, axes)`` where ``axes`` uses tifffile's letters (``T`` time,
``C`` channel, ``Z`` depth, ``Y``, ``X``). Arrays are memory-mapped when the file allows it,
so images larger than RAM stream tile by tile. Every file is written under a temporary name
in the destination folder and renamed when complete: no half-written outputs.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import itertools
import logging
import mmap
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile

from .errors import InputError, describe

_UNIT_TO_NM = {
    "nm": 1.0,
    "nanometer": 1.0,
    "um": 1e3,
    "µm": 1e3,
    "\u03bcm": 1e3,
    "micron": 1e3,
    "microns": 1e3,
    "micrometer": 1e3,
    "mm": 1e6,
    "m": 1e9,
}
log = logging.getLogger(__name__)
IMAGEJ_ORDER = "TZCYXS"
#: pages checked for completeness (a stack of a million planes is still checked in full)
MAX_PAGES = 1_000_000
#: the most pixel bytes a TIFF may claim per byte of file (deflate tops out near 1000)
MAX_EXPANSION = 5000
#: compressed or tiled TIFFs larger than this are read lazily through zarr (when installed)
LAZY_TIFF_BYTES = 1 << 30


@dataclass
class Image:
    """A pixel array with its axes and physical pixel sizes.

    Attributes
    ----------
    data : numpy.ndarray
        Pixels, possibly a read-only memory map.
    axes : str
        One letter per array axis (tifffile convention), e.g. ``"YX"``, ``"TYX"``, ``"ZYX"``.
    pixel_size_nm : dict
        Known pixel sizes per spatial axis letter (``"X"``, ``"Y"``, ``"Z"``), in nm.
    path : pathlib.Path or None
        Where it was read from.
    """

    data: np.ndarray
    axes: str
    pixel_size_nm: dict[str, float] = field(default_factory=dict)
    path: Path | None = None


def _check_complete(tif: tifffile.TiffFile, path: Path) -> None:
    """Refuse a truncated file (tifffile would silently fill the missing part with zeros)."""
    size = path.stat().st_size
    # A damaged IFD chain can be endless (found by fuzzing): an IFD pointing back at itself,
    # which tifffile follows forever (and its own later walks too). Refuse a repeated IFD
    # offset, and look at no more pages than the file can hold (an IFD takes >= 6 bytes).
    seen: set[int] = set()
    for page in itertools.islice(tif.pages, min(MAX_PAGES, size // 6 + 1)):
        offset = getattr(page, "offset", None)
        if offset is not None and offset in seen:
            raise InputError(
                f"{describe(path)} is damaged (its chain of image directories loops); "
                "copy the file again"
            )
        seen.add(offset)
        offsets = getattr(page, "dataoffsets", ()) or ()
        counts = getattr(page, "databytecounts", ()) or ()
        if any(o + c > size for o, c in zip(offsets, counts)):
            raise InputError(
                f"{describe(path)} is truncated ({size} bytes, but its pixel data runs past the "
                "end); copy the file again"
            )


def _check_plausible(nbytes: int, path: Path) -> None:
    """Refuse a file whose header claims far more pixels than its bytes can hold (damaged or
    hostile: decoding it would allocate the claimed size). Compression ratios of real
    microscopy data stay far below :data:`MAX_EXPANSION`."""
    size = path.stat().st_size
    if nbytes > max(1 << 20, MAX_EXPANSION * size):
        raise InputError(
            f"{describe(path)} claims {nbytes / 2**30:.3g} GiB of pixels in a {size / 1e6:.3g} MB "
            "file; it is damaged"
        )


def _imagej_pixel_sizes(tif: tifffile.TiffFile) -> dict[str, float]:
    meta = tif.imagej_metadata or {}
    unit = str(meta.get("unit", "")).strip().lower().replace("\\u00b5", "µ")
    factor = _UNIT_TO_NM.get(unit)
    if factor is None:
        return {}
    sizes = {}
    page = tif.pages.first
    for axis, tag in (("X", "XResolution"), ("Y", "YResolution")):
        value = page.tags.get(tag)
        if value is not None:
            num, den = value.value
            if num > 0 and den > 0:
                sizes[axis] = den / num * factor
    if meta.get("spacing"):
        sizes["Z"] = float(meta["spacing"]) * factor
    return sizes


def _ome_pixel_sizes(tif: tifffile.TiffFile) -> dict[str, float]:
    with contextlib.suppress(ET.ParseError, TypeError):
        root = ET.fromstring(tif.ome_metadata)
        pixels = next(el for el in root.iter() if el.tag.endswith("Pixels"))
        sizes = {}
        for axis in "XYZ":
            value = pixels.get(f"PhysicalSize{axis}")
            unit = pixels.get(f"PhysicalSize{axis}Unit", "µm")
            factor = _UNIT_TO_NM.get(unit.lower(), None)
            if value is not None and factor is not None and float(value) > 0:
                sizes[axis] = float(value) * factor
        return sizes
    return {}


def read_image(path: str | os.PathLike, memmap: bool = True) -> Image:
    """Read a TIFF with its axes and pixel sizes.

    Parameters
    ----------
    path : path-like
        TIFF, OME-TIFF or ImageJ hyperstack.
    memmap : bool
        Memory-map the pixels when the file is uncompressed and contiguous (bounded memory);
        otherwise they are read into RAM.

    Raises
    ------
    InputError
        Missing, unreadable, truncated or RGB files.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{describe(path)} does not exist; check the path")
    try:
        with tifffile.TiffFile(path) as tif:
            _check_complete(tif, path)
            series = tif.series[0]
            _check_plausible(series.nbytes, path)
            axes = series.axes
            sizes = _ome_pixel_sizes(tif) if tif.is_ome else _imagej_pixel_sizes(tif)
            data = None
            if memmap and series.dataoffset is not None:
                with contextlib.suppress(ValueError, OSError):
                    data = tifffile.memmap(path, series=0, mode="r")
            if data is None and series.nbytes > LAZY_TIFF_BYTES:
                data = _lazy_tiff(path)
            if data is None:
                data = series.asarray()
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 - tifffile parses untrusted bytes: any failure
        # there (TiffFileError, codec errors, ZeroDivisionError, MemoryError on absurd sizes,
        # found by fuzzing) means the file is not a readable image
        reason = f"{type(err).__name__}: {err}".replace("\n", " ")[:120]
        raise InputError(
            f"{describe(path)} is not a readable TIFF ({reason}); give a TIFF, OME-TIFF or "
            "ImageJ TIFF file"
        ) from None
    if data.size == 0:
        raise InputError(f"{describe(path)} holds no pixels (a dimension is 0); it is damaged")
    axes = _normalise_axes(axes, data.shape, path)
    return Image(data=data, axes=axes, pixel_size_nm=sizes, path=path)


def _lazy_tiff(path: Path):
    """A compressed TIFF as a zarr array over its own chunks (strips or tiles), or None.

    Nothing is decoded until a region is indexed, so a file larger than RAM streams.
    """
    try:
        import zarr
    except ImportError:
        log.warning(
            "%s is compressed and large: it is read into memory; install the distributed extra "
            "to stream it",
            describe(path),
        )
        return None
    return zarr.open(tifffile.imread(path, aszarr=True, series=0), mode="r")


def plain_stack_as_z(image: Image, axes: str | None = None, notice: bool = True) -> str:
    """The axes to use for a 3D model: a plain stack of planes (``TYX`` with no Z pixel size,
    as ``tifffile.imwrite`` writes a 3D array) is read as a Z stack, with one log line.

    ``train --mode 3d`` and ``predict`` with a 3D model share this rule; ``notice=False``
    skips the log line (a file read again, block by block).
    """
    axes = image.axes if axes is None else axes
    if axes == "TYX" and image.pixel_size_nm.get("Z") is None:
        name = image.path.name if image.path is not None else "the image"
        if notice:
            log.warning("%s is a plain stack of planes; reading it as a Z stack (3D model)", name)
        return "ZYX"
    return axes


def read_input(path: str | os.PathLike) -> Image:
    """Read a TIFF (memory-mapped when possible) or an OME-Zarr image (lazy)."""
    from .zarr_io import is_zarr, read_zarr  # zarr is optional: imported only for zarr paths

    return read_zarr(path) if is_zarr(path) else read_image(path)


def _normalise_axes(axes: str, shape: tuple[int, ...], path: Path) -> str:
    axes = axes.upper()
    if "S" in axes and shape[axes.index("S")] > 1:
        raise InputError(
            f"{describe(path)} is an RGB/multi-sample image; fluorescence data must be one "
            "grey channel per plane (split the channels in Fiji: Image > Color > Split Channels)"
        )
    # tifffile names unknown leading axes Q/I; they are frames for us.
    axes = re.sub("[QI]", "T", axes)
    if len(set(axes)) != len(axes):
        raise InputError(f"{describe(path)} has ambiguous axes {axes!r}; save it as an ImageJ TIFF")
    if not axes.endswith("YX"):
        raise InputError(f"{describe(path)} has axes {axes!r}; the last two must be YX")
    return axes


def _writer_kwargs(axes: str, pixel_size_nm: dict[str, float], large: bool = False) -> dict:
    """tifffile keyword arguments: ImageJ hyperstack when the axes allow, else OME-TIFF.

    ``large`` (over 4 GB) forces a BigTIFF OME file: ImageJ hyperstacks cannot exceed 4 GB.
    """
    x_um = pixel_size_nm.get("X", 0) / 1e3
    y_um = pixel_size_nm.get("Y", x_um * 1e3) / 1e3
    z_um = pixel_size_nm.get("Z", 0) / 1e3
    order = [IMAGEJ_ORDER.find(a) for a in axes]
    if not large and all(i >= 0 for i in order) and order == sorted(order) and "S" not in axes:
        kwargs: dict = {"imagej": True, "metadata": {"axes": axes}}
        if x_um > 0:
            kwargs["resolution"] = (1.0 / x_um, 1.0 / y_um)
            kwargs["metadata"]["unit"] = "um"
        if z_um > 0:
            kwargs["metadata"]["spacing"] = z_um
        return kwargs
    meta: dict = {"axes": axes}
    for axis, value in (("X", x_um), ("Y", y_um), ("Z", z_um)):
        if value > 0:
            meta[f"PhysicalSize{axis}"] = value
            meta[f"PhysicalSize{axis}Unit"] = "µm"
    return {"ome": True, "bigtiff": large, "metadata": meta}


def temporary_path(path: Path) -> Path:
    """A hidden temporary name beside ``path`` (same filesystem, so rename is atomic)."""
    return path.with_name(f".{path.name}.{os.getpid()}.partial")


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_partials(folder: Path, name: str = "*") -> None:
    """Delete the temporary files that killed writers of ``name`` left in ``folder``.

    Only files of :func:`temporary_path`'s form whose process is gone are removed;
    ``name="*"`` means every output in the folder (a training run folder).
    """
    pattern = ".*.partial" if name == "*" else f".{glob.escape(name)}.*.partial"
    for stale in folder.glob(pattern):
        pid = stale.name[: -len(".partial")].rsplit(".", 1)[-1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                stale.unlink()
                log.info("removed %s, left by a killed run", stale.name)


def check_writable(path: str | os.PathLike, overwrite: bool) -> Path:
    """Fail early, before any work, when ``path`` cannot or must not be written.

    Temporary files of an earlier, killed run writing the same output are removed.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(f"output {describe(path)} already exists; use --overwrite to replace it")
    if path.is_dir():
        raise InputError(f"output {describe(path)} is a directory; give a file name")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"output folder {describe(folder)} does not exist; create it first")
    remove_stale_partials(folder, path.name)
    probe = temporary_path(path)
    try:  # os.access is not enough (root, read-only mounts, ACLs): really try
        probe.open("wb").close()
        probe.unlink()
    except OSError as err:
        raise InputError(
            f"output folder {describe(folder)} is not writable ({err.strerror}); choose another -o"
        ) from None
    return path


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path; rename it to ``path`` only if the block succeeds."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_json(path: str | os.PathLike, record: dict) -> None:
    """Write ``record`` as indented JSON, atomically (:func:`atomic_output`)."""
    import json

    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(record, indent=1))


def write_tiff(
    path: str | os.PathLike,
    data: np.ndarray,
    axes: str,
    pixel_size_nm: dict[str, float] | None = None,
) -> None:
    """Write ``data`` atomically as an ImageJ (or OME) TIFF carrying axes and pixel sizes."""
    with atomic_output(path) as tmp:
        tifffile.imwrite(tmp, data, **_writer_kwargs(axes, pixel_size_nm or {}))


def release_pages(array: np.ndarray) -> None:
    """Drop this process's resident pages of the memory map under ``array``, if it has one.

    Pages of a memory-mapped file count as the process's resident memory until the kernel
    reclaims them, so a stack written through a map looks as large as the file in ``top``.
    The map is shared, so written data already sits in the page cache and reaches the file;
    dropping the pages only unmaps them (Linux ``MADV_DONTNEED``; elsewhere nothing happens).
    """
    holder = array
    while getattr(holder, "_mmap", None) is None and getattr(holder, "base", None) is not None:
        holder = holder.base
    mapping = getattr(holder, "_mmap", None)
    # a copy-on-write map ("c") keeps changes only in its pages: never drop those
    if mapping is None or getattr(holder, "mode", "c") == "c" or not hasattr(mmap, "MADV_DONTNEED"):
        return
    with contextlib.suppress(OSError, ValueError):
        mapping.madvise(mmap.MADV_DONTNEED)


@contextlib.contextmanager
def memmap_output(
    path: str | os.PathLike,
    shape: tuple[int, ...],
    dtype: np.dtype,
    axes: str,
    pixel_size_nm: dict[str, float] | None = None,
) -> Iterator[np.ndarray]:
    """Create a TIFF as a writable memory map under a temporary name; rename on success.

    Memory stays bounded by what is touched, not by the image size.
    """
    with atomic_output(path) as tmp:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        kwargs = _writer_kwargs(axes, pixel_size_nm or {}, large=nbytes > 2**32 - 2**25)
        array = tifffile.memmap(tmp, shape=shape, dtype=dtype, **kwargs)
        try:
            yield array
            array.flush()
        finally:
            del array
