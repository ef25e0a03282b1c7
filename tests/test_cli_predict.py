"""The predict and info commands: outputs, pixel sizes, frames, and every bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from tiny_models import build_tiny
from zsdeconvnet.cli.main import main
from zsdeconvnet.runtime.io import read_image


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def files_in(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_predict_writes_sr_and_denoised_with_pixel_sizes(model2d, image2d, tmp_path):
    out, den = tmp_path / "sr.tif", tmp_path / "dn.tif"
    result = run("predict", model2d, image2d, "-o", out, "--denoised", den, "--quiet")
    assert result.exit_code == 0, result.output
    sr = read_image(out)
    dn = read_image(den)
    assert sr.data.shape == (90, 122) and dn.data.shape == (45, 61)
    assert sr.data.dtype == np.float32
    assert sr.pixel_size_nm["X"] == pytest.approx(32.5, rel=1e-4)
    assert dn.pixel_size_nm["Y"] == pytest.approx(65.0, rel=1e-4)
    assert not [n for n in files_in(tmp_path) if n.startswith(".")]


def test_time_series_keeps_frame_axis(model2d, tmp_path):
    data = np.random.default_rng(0).random((3, 20, 30)).astype(np.float32)
    data[1] *= 10  # frames are normalised independently, each over the whole frame
    src = tmp_path / "movie.tif"
    tifffile.imwrite(src, data, imagej=True, metadata={"axes": "TYX"})
    out = tmp_path / "movie_sr.tif"
    assert run("predict", model2d, src, "-o", out, "--quiet", "--tile", "16").exit_code == 0
    sr = read_image(out)
    assert sr.axes == "TYX" and sr.data.shape == (3, 40, 60)
    single = tmp_path / "frame1.tif"
    tifffile.imwrite(single, data[1])
    run("predict", model2d, single, "-o", tmp_path / "f1_sr.tif", "--quiet")
    np.testing.assert_allclose(
        read_image(tmp_path / "f1_sr.tif").data,
        sr.data[1],
        rtol=1e-4,
        atol=1e-4 * float(np.abs(sr.data[1]).max()),
    )


def test_channel_selection(model2d, tmp_path):
    data = np.random.default_rng(0).random((2, 24, 24)).astype(np.float32)
    src = tmp_path / "two_channels.tif"
    tifffile.imwrite(src, data, imagej=True, metadata={"axes": "CYX"})
    out = tmp_path / "c1.tif"
    assert run("predict", model2d, src, "-o", out, "--channel", "1", "--quiet").exit_code == 0
    assert read_image(out).axes == "YX"
    bad = run("predict", model2d, src, "-o", tmp_path / "c5.tif", "--channel", "5", "--quiet")
    assert bad.exit_code != 0 and "channel 5" in bad.output


def test_several_inputs_go_to_a_directory(model2d, image2d, tmp_path):
    other = tmp_path / "second.tif"
    tifffile.imwrite(other, np.random.default_rng(2).random((30, 30)).astype(np.float32))
    outdir = tmp_path / "restored"
    result = run("predict", model2d, str(tmp_path / "*.tif"), "-o", outdir, "--quiet")
    assert result.exit_code == 0, result.output
    assert files_in(outdir) == {"cell.tif", "second.tif"}


def test_rescale_reproduces_reference_uint16(model2d, image2d, tmp_path):
    out = tmp_path / "sr16.tif"
    assert run("predict", model2d, image2d, "-o", out, "--rescale", "--quiet").exit_code == 0
    data = tifffile.imread(out)
    assert data.dtype == np.uint16 and data.max() == 65535


def test_3d_model_on_stack(model3d, tmp_path):
    stack = np.random.default_rng(0).random((5, 20, 20)).astype(np.float32)
    src = tmp_path / "stack.tif"
    tifffile.imwrite(
        src,
        stack,
        imagej=True,
        resolution=(10, 10),
        metadata={"axes": "ZYX", "spacing": 0.2, "unit": "um"},
    )
    out = tmp_path / "stack_sr.tif"
    assert run("predict", model3d, src, "-o", out, "--quiet", "--tile-z", "4").exit_code == 0
    sr = read_image(out)
    assert sr.data.shape == (5, 40, 40)
    assert sr.pixel_size_nm["Z"] == pytest.approx(200, rel=1e-3)
    assert sr.pixel_size_nm["X"] == pytest.approx(50, rel=1e-3)


def test_info_describes_the_model(model2d):
    result = run("info", model2d, "--provider", "cpu")
    assert result.exit_code == 0
    assert "2D (YX)" in result.output and "CPUExecutionProvider" in result.output


def test_asking_for_cuda_without_it_is_a_clear_error(model2d, image2d, tmp_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA")
    result = run("predict", model2d, image2d, "-o", tmp_path / "x.tif", "--provider", "cuda")
    assert result.exit_code == 2 and "onnxruntime-gpu" in result.output


# -- bad input: one line naming the file, non-zero exit, nothing written -----------------------


def _bad_tiffs(tmp: Path) -> dict[str, Path]:
    good = np.random.default_rng(0).random((40, 40)).astype(np.float32)
    cases = {}
    cases["not a TIFF"] = tmp / "notes.tif"
    cases["not a TIFF"].write_text("this is not an image")
    full = tmp / "full.tif"
    tifffile.imwrite(full, good)
    cases["truncated"] = tmp / "truncated.tif"
    cases["truncated"].write_bytes(full.read_bytes()[:3000])
    full.unlink()
    nan = good.copy()
    nan[3, 4] = np.nan
    cases["NaN"] = tmp / "nan.tif"
    tifffile.imwrite(cases["NaN"], nan)
    cases["constant"] = tmp / "flat.tif"
    tifffile.imwrite(cases["constant"], np.full((40, 40), 7, np.uint16))
    cases["missing"] = tmp / "missing.tif"
    return cases


@pytest.mark.parametrize(
    "case, phrase",
    [
        ("not a TIFF", "not a readable TIFF"),
        ("truncated", "truncated"),
        ("NaN", "NaN"),
        ("constant", "constant"),
        ("missing", "does not exist"),
    ],
)
def test_bad_images_are_refused(model2d, tmp_path, case, phrase):
    inputs = tmp_path / "in"
    inputs.mkdir()
    path = _bad_tiffs(inputs)[case]
    outdir = tmp_path / "out"
    outdir.mkdir()
    result = run("predict", model2d, path, "-o", outdir / "sr.tif", "--quiet")
    assert result.exit_code != 0
    errors = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    assert phrase in errors[0] and path.name in errors[0]
    assert files_in(outdir) == set()


def test_wrong_dimensionality(model3d, image2d, tmp_path):
    result = run("predict", model3d, image2d, "-o", tmp_path / "o.tif", "--quiet")
    assert result.exit_code != 0 and "3D" in result.output and "cell.tif" in result.output
    assert not (tmp_path / "o.tif").exists()


def test_model_without_metadata(tmp_path, image2d):
    import onnx

    model = build_tiny(tmp_path / "m.onnx")
    proto = onnx.load(model)
    del proto.metadata_props[:]
    onnx.save(proto, tmp_path / "bare.onnx")
    result = run("predict", tmp_path / "bare.onnx", image2d, "-o", tmp_path / "o.tif")
    assert result.exit_code == 2 and "no zsdeconvnet metadata" in result.output
    assert "bare.onnx" in result.output


def test_model_of_unknown_version(tmp_path, image2d):
    import onnx

    proto = onnx.load(build_tiny(tmp_path / "m.onnx"))
    for entry in proto.metadata_props:
        if entry.key == "zsdeconvnet.format_version":
            entry.value = "99"
    onnx.save(proto, tmp_path / "future.onnx")
    result = run("info", tmp_path / "future.onnx")
    assert result.exit_code == 2 and "version 99" in result.output


def test_not_an_onnx_file(tmp_path, image2d):
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"\x00\x01garbage" * 10)
    result = run("predict", fake, image2d, "-o", tmp_path / "o.tif")
    assert result.exit_code == 2 and "not a readable ONNX model" in result.output


def test_existing_output_needs_overwrite(model2d, image2d, tmp_path):
    out = tmp_path / "sr.tif"
    out.write_bytes(b"keep me")
    result = run("predict", model2d, image2d, "-o", out, "--quiet")
    assert result.exit_code == 2 and "--overwrite" in result.output
    assert out.read_bytes() == b"keep me"
    assert run("predict", model2d, image2d, "-o", out, "--quiet", "--overwrite").exit_code == 0
    assert tifffile.imread(out).shape == (90, 122)


def test_unwritable_output_folder(model2d, image2d, tmp_path):
    if os.geteuid() == 0:
        locked = Path("/sys/kernel")  # even root cannot create files in sysfs
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
    result = run("predict", model2d, image2d, "-o", locked / "sr.tif")
    assert result.exit_code == 2 and "not writable" in result.output


def test_missing_output_folder(model2d, image2d, tmp_path):
    result = run("predict", model2d, image2d, "-o", tmp_path / "nope" / "sr.tif")
    assert result.exit_code == 2 and "does not exist" in result.output


def test_one_bad_file_among_many_writes_nothing(model2d, image2d, tmp_path):
    bad = tmp_path / "zz_bad.tif"
    bad.write_text("not a tiff")
    outdir = tmp_path / "out"
    result = run("predict", model2d, image2d, bad, "-o", outdir, "--quiet")
    assert result.exit_code == 2 and "zz_bad.tif" in result.output
    assert files_in(outdir) == set()


def test_runtime_never_imports_torch(model2d, image2d, tmp_path):
    script = (
        "import sys\n"
        "from zsdeconvnet.cli.main import main\n"
        "try:\n"
        f"    main(['predict', r'{model2d}', r'{image2d}', '-o', r'{tmp_path / 'o.tif'}',"
        " '--quiet'])\n"
        "except SystemExit as e:\n"
        "    assert e.code in (0, None), e.code\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx')"
        " or m.startswith('zsdeconvnet.training') or m.startswith('zsdeconvnet.export'))\n"
        "print('LOADED', bad)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "LOADED []" in done.stdout
    assert (tmp_path / "o.tif").exists()


def test_damp_stripes_option_runs(model2d, image2d, tmp_path):
    out = tmp_path / "sr.tif"
    result = run("predict", model2d, image2d, "-o", out, "--damp-stripes", "--quiet")
    assert result.exit_code == 0, result.output
    assert np.isfinite(tifffile.imread(out)).all()


def test_training_commands_without_torch_say_what_to_install(tmp_path):
    script = (
        "import sys\n"
        "sys.modules['torch'] = None  # as if torch were not installed\n"
        "from zsdeconvnet.cli.main import main\n"
        "main(['train', 'x.tif', '--psf', 'p.tif', '-o', 'm.onnx'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 1
    assert "zsdeconvnet[train]" in done.stderr and "Traceback" not in done.stderr


def _without(modules: tuple[str, ...], argv: list[str], cwd: Path):
    script = (
        "import sys\n"
        f"for name in {modules!r}:\n"
        "    sys.modules[name] = None  # as if it were not installed\n"
        "from zsdeconvnet.cli.main import main\n"
        f"main({argv!r})\n"
    )
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=cwd)


def _commands_needing(extra):
    from zsdeconvnet.cli.main import COMMANDS

    return sorted(name for name, (_, _, needs) in COMMANDS.items() if needs == extra)


@pytest.mark.parametrize(
    "name", _commands_needing(("torch", "onnx", "onnxscript", "scipy", "skimage", "matplotlib"))
)
def test_every_torch_command_without_torch_prints_the_install_hint(name, tmp_path):
    """demo, sim-reconstruct and sim-recorrupt import torch or scipy only when run."""
    done = _without(("torch",), [name, "x.tif"], tmp_path)
    assert done.returncode == 1, done.stderr
    assert "zsdeconvnet[train]" in done.stderr and "Traceback" not in done.stderr
    helped = _without(("torch",), [name, "--help"], tmp_path)
    assert helped.returncode == 0 and "zsdeconvnet[train]" in helped.stdout


@pytest.mark.parametrize("name", _commands_needing(("scipy", "skimage")))
def test_physics_commands_without_scipy_name_the_physics_extra(name, tmp_path):
    done = _without(("scipy", "skimage"), [name, "x.tif"], tmp_path)
    assert done.returncode == 1 and "zsdeconvnet[physics]" in done.stderr
    assert "Traceback" not in done.stderr


def test_every_option_has_help_text():
    import click
    from zsdeconvnet.cli.main import COMMANDS

    ctx = click.Context(main)
    bare = []
    for name in COMMANDS:
        command = main.get_command(ctx, name)
        commands = command.commands.items() if isinstance(command, click.Group) else [("", command)]
        for sub, cmd in commands:
            bare += [
                f"{name} {sub} {'/'.join(p.opts)}".replace("  ", " ")
                for p in cmd.params
                if isinstance(p, click.Option) and not p.hidden and not p.help
            ]
    assert bare == []


def test_predict_tile_default_is_the_runtime_default():
    from zsdeconvnet.runtime.predict import PredictOptions

    tile = next(p for p in main.get_command(None, "predict").params if p.name == "tile")
    assert tile.default == PredictOptions().tile == 512


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_an_output_that_is_the_input_is_refused_whatever_the_flags(
    model2d, image2d, tmp_path, overwrite
):
    before = image2d.read_bytes()
    same = run("predict", model2d, image2d, "-o", image2d, *overwrite, "--quiet")
    assert same.exit_code == 2 and "is the input" in same.output
    den = run(
        "predict",
        model2d,
        image2d,
        "-o",
        tmp_path / "sr.tif",
        "--denoised",
        image2d,
        *overwrite,
        "--quiet",
    )
    assert den.exit_code == 2 and "is the input" in den.output
    # several inputs into their own folder: every output would replace its input
    other = tmp_path / "b.tif"
    other.write_bytes(before)
    folder = run("predict", model2d, image2d, other, "-o", tmp_path, *overwrite, "--quiet")
    assert folder.exit_code == 2 and "is the input" in folder.output
    assert image2d.read_bytes() == before and not (tmp_path / "sr.tif").exists()


def test_a_3d_model_reads_a_plain_multipage_tiff_as_z_as_train_does(model3d, tmp_path, caplog):
    path = tmp_path / "plain.tif"
    stack = np.random.default_rng(0).random((9, 20, 24), dtype=np.float32)
    tifffile.imwrite(path, stack)  # no ImageJ metadata: tifffile reads its axes as 'QYX'
    assert read_image(path).axes == "TYX"
    out = tmp_path / "sr.tif"
    with caplog.at_level("WARNING"):
        result = run("predict", model3d, path, "-o", out, "--quiet")
    assert result.exit_code == 0, result.output
    assert "reading it as a Z stack" in caplog.text
    assert tifffile.imread(out).shape == (9, 40, 48)


def test_a_2d_model_on_a_z_stack_says_it_goes_plane_by_plane(model2d, tmp_path, caplog):
    from zsdeconvnet.runtime.io import write_tiff

    path = tmp_path / "stack.tif"
    stack = np.random.default_rng(0).random((3, 20, 24), dtype=np.float32)
    write_tiff(path, stack, "ZYX", {"X": 65.0, "Y": 65.0, "Z": 200.0})
    with caplog.at_level("WARNING"):
        result = run("predict", model2d, path, "-o", tmp_path / "sr.tif", "--quiet")
    assert result.exit_code == 0, result.output
    assert "plane by plane" in caplog.text
