"""A reduced-precision model checks itself on the machine that loads it (runtime.selfcheck)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from zsdeconvnet.cli.main import main
from zsdeconvnet.export.quantize import quantize_model
from zsdeconvnet.runtime.errors import InputError
from zsdeconvnet.runtime.metadata import KEY_PREFIX
from zsdeconvnet.runtime.model import Model
from zsdeconvnet.runtime.selfcheck import decode_array, encode_array

KEY = KEY_PREFIX + "self_check"


def tiles(n: int = 3, size: int = 48) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.random((1, 1, size, size), dtype=np.float32) for _ in range(n)]


@pytest.fixture(scope="module", params=["int8", "fp16"])
def reduced(request, model2d, tmp_path_factory):
    path = tmp_path_factory.mktemp("reduced") / f"{request.param}.onnx"
    scores = quantize_model(model2d, path, tiles(), min_psnr=20, kind=request.param)
    return path, scores


def edit_check(source, target, change) -> None:
    """Copy a model with its self-check record passed through ``change(record)``."""
    proto = onnx.load(str(source))
    for entry in proto.metadata_props:
        if entry.key == KEY:
            record = json.loads(entry.value)
            change(record)
            entry.value = json.dumps(record)
    onnx.save(proto, str(target))


def test_a_reduced_model_carries_a_small_check_that_passes_where_it_was_made(reduced):
    path, scores = reduced
    model = Model(path, provider="cpu")
    check = model.metadata.self_check
    assert check["gate_db"] == 20 and min(scores.values()) >= 20
    assert decode_array(check["input"], "m").shape == (1, 1, 48, 48)
    assert decode_array(check["deconvolved"], "m").shape == (1, 1, 96, 96)
    # same machine, same kernels: the stored fp32 reference is reproduced as at export
    for name, value in model.check_psnr_db.items():
        assert value == pytest.approx(check["psnr_at_export_db"][name], abs=0.01)
    size = len(next(p.value for p in onnx.load(str(path)).metadata_props if p.key == KEY))
    assert size < 200_000  # bounded: a few % of a model file


def test_the_fp32_model_has_no_check(model2d):
    model = Model(model2d, provider="cpu")
    assert model.metadata.self_check is None and model.check_psnr_db is None


def perturb_reference(record, db: float) -> None:
    """Make the stored fp32 output differ from this machine's by ``db`` dB (PSNR at the peak),
    as a machine with other kernels would have computed it."""
    ref = decode_array(record["deconvolved"], "m")
    noise = np.random.default_rng(1).standard_normal(ref.shape).astype(np.float32)
    noise *= record["peak"]["deconvolved"] * 10 ** (-db / 20)
    record["deconvolved"] = encode_array(ref + noise)


def test_a_model_that_misses_its_gate_on_this_machine_is_refused_at_load(reduced, tmp_path):
    path, _ = reduced
    elsewhere = tmp_path / "elsewhere.onnx"
    edit_check(path, elsewhere, lambda r: perturb_reference(r, 12.0))
    with pytest.raises(InputError) as err:
        Model(elsewhere, provider="cpu")
    message = str(err.value)
    assert "only to 1" in message and "gate is 20 dB" in message and "fp32 model" in message
    # the benchmarks may switch it off knowingly
    assert Model(elsewhere, provider="cpu", self_check=False).check_psnr_db is None


def test_predict_refuses_such_a_model_with_one_line_and_writes_nothing(reduced, image2d, tmp_path):
    path, _ = reduced
    elsewhere = tmp_path / "elsewhere.onnx"
    edit_check(path, elsewhere, lambda r: r.update(gate_db=200.0))
    out = tmp_path / "sr.tif"
    result = CliRunner().invoke(main, ["predict", str(elsewhere), str(image2d), "-o", str(out)])
    assert result.exit_code == 2
    assert "reproduces its fp32 reference on this machine only to" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.parametrize(
    "damage",
    [
        lambda r: r.update(input={"shape": [1, 1, 48, 48], "float32_zlib_base64": "!!"}),
        lambda r: r.update(input={"shape": [1, 1, 4096, 4096], "float32_zlib_base64": ""}),
        lambda r: r["input"].update(shape=[1, 1, 40, 48]),
        lambda r: r.pop("peak"),
        lambda r: r.update(gate_db="high"),
        lambda r: r["denoised"].update(shape=[1, 1, 24, 96]),
    ],
    ids=["base64", "too-large", "wrong-size", "no-peak", "gate-not-a-number", "wrong-shape"],
)
def test_a_damaged_check_is_one_clear_error(reduced, tmp_path, damage):
    path, _ = reduced
    damaged = tmp_path / "damaged.onnx"
    edit_check(path, damaged, damage)
    with pytest.raises(InputError, match="self-check"):
        Model(damaged, provider="cpu")


def test_default_int8_weights_are_7_bit_so_no_x86_kernel_saturates(model2d, tmp_path):
    """Without VNNI, onnxruntime adds pairs of u8 x s8 products in 16 bits: 2 * 255 * 64 fits,
    2 * 255 * 128 does not. The default recipe keeps every conv weight in [-64, 64]."""
    from onnx.numpy_helper import to_array

    path = tmp_path / "int8.onnx"
    quantize_model(model2d, path, tiles(), min_psnr=0, kind="int8")
    graph = onnx.load(str(path)).graph
    weights = [to_array(w) for w in graph.initializer if w.data_type == onnx.TensorProto.INT8]
    assert weights and all(np.abs(w.astype(int)).max() <= 64 for w in weights)
    full = tmp_path / "full.onnx"
    quantize_model(model2d, full, tiles(), min_psnr=0, kind="int8", recipe="qdq-s8-perchannel")
    graph = onnx.load(str(full)).graph
    widest = max(
        int(np.abs(to_array(w).astype(int)).max())
        for w in graph.initializer
        if w.data_type == onnx.TensorProto.INT8
    )
    assert widest > 64  # the check above can fail: full 8-bit weights reach past 7 bits


def test_info_reports_the_check_on_this_machine(reduced, tmp_path):
    path, _ = reduced
    passes = CliRunner().invoke(main, ["info", str(path), "--provider", "cpu"])
    assert passes.exit_code == 0 and "self-check here: passes" in passes.output
    elsewhere = tmp_path / "elsewhere.onnx"
    edit_check(path, elsewhere, lambda r: r.update(gate_db=200.0))
    fails = CliRunner().invoke(main, ["info", str(elsewhere), "--provider", "cpu"])
    assert fails.exit_code == 0 and "self-check here: FAILS, predict refuses it" in fails.output
