"""Past one process: OME-Zarr in and out, the Dask backend, killed workers and resumed runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

zarr = pytest.importorskip("zarr")
pytest.importorskip("distributed")

from ome_zarr.format import FormatV05  # noqa: E402
from ome_zarr.writer import write_multiscales_metadata  # noqa: E402
from zsdeconvnet.runtime.distributed import (  # noqa: E402
    Job,
    LocalExecutor,
    open_executor,
    run_jobs,
)
from zsdeconvnet.runtime.errors import InputError  # noqa: E402
from zsdeconvnet.runtime.model import Model  # noqa: E402
from zsdeconvnet.runtime.predict import PredictOptions, Predictor  # noqa: E402
from zsdeconvnet.runtime.tasks import ModelSpec  # noqa: E402
from zsdeconvnet.runtime.zarr_io import MARKERS, partial_path, read_zarr  # noqa: E402

PIXEL_UM = 0.065


def _series(shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (100 + 80 * rng.random(shape)).astype(np.float32)


def write_ome_zarr(path: Path, data: np.ndarray, axes: str, chunks) -> Path:
    """A minimal OME-Zarr (NGFF 0.5) image, as other software writes it."""
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    root.create_array("0", data=data, chunks=chunks)
    scale = [PIXEL_UM if a in "yx" else 1.0 for a in axes]
    ome_axes = [
        {"name": a, "type": "space", "unit": "micrometer"}
        if a in "zyx"
        else {"name": a, "type": "time"}
        for a in axes
    ]
    write_multiscales_metadata(
        root,
        datasets=[{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}],
        fmt=FormatV05(),
        axes=ome_axes,
    )
    return path


def reference(model_path: Path, data: np.ndarray, axes: str, tmp: Path, tile: int):
    """The single-process runtime on the same pixels (TIFF in, TIFF out)."""
    src = tmp / "ref_in.tif"
    tifffile.imwrite(src, data, imagej=True, metadata={"axes": axes})
    options = PredictOptions(tile=tile, progress=False)
    Predictor(Model(model_path, "cpu"), options).predict_file(
        src, tmp / "ref_sr.tif", tmp / "ref_dn.tif"
    )
    return tifffile.imread(tmp / "ref_sr.tif"), tifffile.imread(tmp / "ref_dn.tif")


def test_ome_zarr_round_trip_equals_single_process(model2d, tmp_path):
    data = _series((2, 300, 280))
    src = write_ome_zarr(tmp_path / "movie.zarr", data, "tyx", (1, 128, 128))
    image = read_zarr(src)
    assert image.axes == "TYX" and image.pixel_size_nm["X"] == pytest.approx(65.0)
    options = PredictOptions(tile=64, progress=False)
    job = Job(src, tmp_path / "sr.zarr", tmp_path / "dn.zarr")
    run_jobs([job], ModelSpec(str(model2d), "cpu"), options, LocalExecutor(), block=128)
    ref_sr, ref_dn = reference(model2d, data, "TYX", tmp_path, 64)
    out = zarr.open_group(str(tmp_path / "sr.zarr"), mode="r")
    np.testing.assert_array_equal(out["0"][:], ref_sr)
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "dn.zarr" / "0"))[:], ref_dn)
    # chunk = one tile's 2x output (tile 64 splits 300 x 280 into 5 x 5 tiles of 60 x 56);
    # pyramid level 1 is the 2x2 mean of level 0
    assert out["0"].chunks == (1, 120, 112)
    level1 = out["1"][:]
    expect = ref_sr.reshape(2, 300, 2, 280, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(level1, expect, rtol=1e-6, atol=1e-4)
    # pixel sizes: the 2x output at half the input pixel, centres a quarter input pixel back
    sets = out.attrs["ome"]["multiscales"][0]["datasets"]
    scale0, shift0 = (
        t[k] for t, k in zip(sets[0]["coordinateTransformations"], ("scale", "translation"))
    )
    assert scale0[1:] == pytest.approx([PIXEL_UM / 2] * 2)
    assert shift0[1:] == pytest.approx([-PIXEL_UM / 4] * 2)
    assert sets[1]["coordinateTransformations"][0]["scale"][1:] == pytest.approx([PIXEL_UM] * 2)
    assert read_zarr(tmp_path / "sr.zarr").pixel_size_nm["Y"] == pytest.approx(32.5)
    assert not partial_path(tmp_path / "sr.zarr").exists()  # finished outputs are moved in place


def test_local_cluster_of_two_workers_files_and_large_zarr(model2d, tmp_path):
    """Several TIFFs and one zarr image on 2 worker processes; a worker is killed mid-run."""
    files = []
    for k in range(3):
        path = tmp_path / f"cell{k}.tif"
        tifffile.imwrite(path, _series((90, 110), seed=k), imagej=True, metadata={"axes": "YX"})
        files.append(path)
    big = _series((1, 640, 704), seed=7)
    src = write_ome_zarr(tmp_path / "big.zarr", big, "tyx", (1, 256, 256))
    options = PredictOptions(tile=32, progress=False)
    spec = ModelSpec(str(model2d), "cpu")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    jobs = [Job(p, out_dir / p.name) for p in files] + [Job(src, out_dir / "big.zarr")]
    killed = {}
    with open_executor("local:2", threads=1) as (executor, _):
        pids = list(executor.client.run(os.getpid).values())
        markers = partial_path(out_dir / "big.zarr") / MARKERS

        def kill_one_worker() -> None:  # once some blocks are written, SIGKILL a worker
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if markers.is_dir() and len(os.listdir(markers)) >= 10:
                    killed["done_before"] = len(os.listdir(markers))
                    os.kill(pids[0], signal.SIGKILL)
                    return
                time.sleep(0.002)

        watcher = threading.Thread(target=kill_one_worker)
        watcher.start()
        done = run_jobs(jobs, spec, options, executor, block=32)
        watcher.join()
    total = 20 * 22  # 640/32 x 704/32 blocks of one tile each
    assert "done_before" in killed and killed["done_before"] < total, "the kill came too late"
    # each worker process opened the ONNX session once, whatever number of tasks it ran
    by_pid: dict[int, int] = {}
    for d in done:
        by_pid[d.pid] = max(by_pid.get(d.pid, 0), d.sessions)
    assert set(by_pid.values()) == {1} and len(done) > len(by_pid)
    local = Predictor(Model(model2d, "cpu"), options)
    for path in files:
        ref = tmp_path / f"ref_{path.name}"
        local.predict_file(path, ref)
        np.testing.assert_array_equal(tifffile.imread(out_dir / path.name), tifffile.imread(ref))
    ref_sr, _ = reference(model2d, big, "TYX", tmp_path, 32)
    np.testing.assert_array_equal(zarr.open_array(str(out_dir / "big.zarr" / "0"))[0], ref_sr)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "zsdeconvnet", *args]


def test_killed_run_resumes_and_redoes_only_missing_blocks(model2d, tmp_path):
    data = _series((1, 512, 512), seed=3)
    src = write_ome_zarr(tmp_path / "in.zarr", data, "tyx", (1, 256, 256))
    out = tmp_path / "out.zarr"
    args = _cli("predict", str(model2d), str(src), "-o", str(out), "--tile", "32", "--block", "32")
    proc = subprocess.Popen([*args, "--quiet"], stderr=subprocess.PIPE)
    markers = partial_path(out) / MARKERS
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if markers.is_dir() and len(os.listdir(markers)) >= 20:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    done_before = len(os.listdir(markers))
    assert 20 <= done_before < 256 and not out.exists()
    again = subprocess.run(_cli(*args[3:]), capture_output=True, text=True)
    assert again.returncode != 0 and "--resume" in again.stderr  # never silently restarted
    resumed = subprocess.run([*args, "--resume", "--quiet"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    reported = int(resumed.stderr.split("resuming, ")[1].split(" of ")[0])
    assert reported >= done_before
    ref_sr, _ = reference(model2d, data, "TYX", tmp_path, 32)
    np.testing.assert_array_equal(zarr.open_array(str(out / "0"))[0], ref_sr)


def test_zarr_errors_are_one_clear_line(model2d, tmp_path):
    data = _series((100, 120))
    src = write_ome_zarr(tmp_path / "in.zarr", data, "yx", (64, 64))
    spec, options = ModelSpec(str(model2d), "cpu"), PredictOptions(tile=32, progress=False)
    run_jobs([Job(src, tmp_path / "o.zarr")], spec, options, LocalExecutor())
    with pytest.raises(InputError, match="already exists"):
        run_jobs([Job(src, tmp_path / "o.zarr")], spec, options, LocalExecutor())
    ensemble = PredictOptions(tile=32, progress=False, ensemble=True)
    with pytest.raises(InputError, match="whole frames"):
        run_jobs([Job(src, tmp_path / "e.zarr")], spec, ensemble, LocalExecutor())
    with pytest.raises(InputError, match="local"):
        with open_executor("localhost:1", None):
            pass
    group = zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    group.create_array("x", shape=(4, 4), dtype="f4")
    with pytest.raises(InputError, match="multiscales"):
        read_zarr(tmp_path / "plain.zarr")
    # a partial output from different options is not mixed into a resumed run
    partial = partial_path(tmp_path / "p.zarr")
    run_jobs([Job(src, tmp_path / "p.zarr")], spec, options, LocalExecutor())
    os.replace(tmp_path / "p.zarr", partial)
    other = PredictOptions(tile=64, progress=False)
    with pytest.raises(InputError, match="different job"):
        run_jobs([Job(src, tmp_path / "p.zarr")], spec, other, LocalExecutor(), resume=True)
    result = subprocess.run(
        _cli("predict", str(model2d), str(src), "-o", str(tmp_path / "q.zarr"), "--dask", "x"),
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1


def test_large_compressed_tiff_is_read_lazily(model2d, tmp_path, monkeypatch):
    from zsdeconvnet.runtime import io

    data = _series((2, 150, 170), seed=5)
    path = tmp_path / "packed.tif"
    tifffile.imwrite(path, data, compression="zlib", tile=(64, 64), metadata={"axes": "TYX"})
    eager = io.read_image(path)
    assert isinstance(eager.data, np.ndarray)
    monkeypatch.setattr(io, "LAZY_TIFF_BYTES", 0)
    lazy = io.read_image(path)
    assert not isinstance(lazy.data, np.ndarray) and lazy.axes == eager.axes
    predictor = Predictor(Model(model2d, "cpu"), PredictOptions(tile=32, progress=False))
    predictor.predict_file(path, tmp_path / "lazy_sr.tif")
    monkeypatch.setattr(io, "LAZY_TIFF_BYTES", 1 << 40)
    predictor.predict_file(path, tmp_path / "eager_sr.tif")
    np.testing.assert_array_equal(
        tifffile.imread(tmp_path / "lazy_sr.tif"), tifffile.imread(tmp_path / "eager_sr.tif")
    )


def test_3d_stack_in_zarr_blocks_equals_single_process(model3d, tmp_path):
    data = _series((20, 70, 90), seed=11)
    src = write_ome_zarr(tmp_path / "stack.zarr", data, "zyx", (10, 64, 64))
    options = PredictOptions(tile=32, tile_z=8, progress=False)
    run_jobs(
        [Job(src, tmp_path / "sr.zarr")],
        ModelSpec(str(model3d), "cpu"),
        options,
        LocalExecutor(),
        block=32,
    )
    ref = tmp_path / "ref.tif"
    tifffile.imwrite(tmp_path / "in.tif", data, imagej=True, metadata={"axes": "ZYX"})
    Predictor(Model(model3d, "cpu"), options).predict_file(tmp_path / "in.tif", ref)
    out = zarr.open_array(str(tmp_path / "sr.zarr" / "0"))
    assert out.chunks[0] == 8  # z tiles become z chunks
    np.testing.assert_array_equal(out[:], tifffile.imread(ref))
