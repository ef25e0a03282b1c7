"""Execution providers: selection, reported fallbacks, and the I/O-binding path (on CPU)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from zsdeconvnet.runtime import model as model_module
from zsdeconvnet.runtime.errors import InputError
from zsdeconvnet.runtime.model import Model, resolve_providers


def test_auto_prefers_cuda_then_cpu(monkeypatch):
    monkeypatch.setattr(
        model_module.ort,
        "get_available_providers",
        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    assert resolve_providers("auto") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(
        model_module.ort, "get_available_providers", lambda: ["CPUExecutionProvider"]
    )
    assert resolve_providers("auto") == ["CPUExecutionProvider"]


def test_tensorrt_chain_falls_back_through_cuda(monkeypatch):
    monkeypatch.setattr(
        model_module.ort,
        "get_available_providers",
        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    assert resolve_providers("tensorrt")[0] == "TensorrtExecutionProvider"
    monkeypatch.setattr(
        model_module.ort, "get_available_providers", lambda: ["CPUExecutionProvider"]
    )
    with pytest.raises(InputError, match="onnxruntime-gpu"):
        resolve_providers("tensorrt")


def test_a_silent_fallback_is_reported(model2d, monkeypatch, caplog):
    """onnxruntime may drop CUDA (missing libraries) without an error: we say so."""
    monkeypatch.setattr(
        model_module,
        "resolve_providers",
        lambda choice: ["CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    real = model_module.ort.InferenceSession

    def cpu_only(path, sess_options=None, providers=None):
        return real(path, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(model_module.ort, "InferenceSession", cpu_only)
    with caplog.at_level(logging.WARNING):
        loaded = Model(model2d, provider="cuda")
    assert loaded.active_provider == "CPUExecutionProvider"
    assert "asked for CUDAExecutionProvider but onnxruntime runs CPU" in caplog.text


def test_io_binding_gives_the_same_outputs(model2d):
    x = np.random.default_rng(0).random((2, 1, 32, 48), dtype=np.float32)
    plain = Model(model2d, provider="cpu").run(x)
    bound = Model(model2d, provider="cpu", io_binding=True).run(x)
    for a, b in zip(plain, bound):
        np.testing.assert_array_equal(a, b)


def test_cpu_sessions_run_without_the_memory_pattern(model2d):
    """The memory pattern cost memory and time on the CPU (RESULTS.md); it stays off there."""
    model = Model(model2d, provider="cpu")
    assert model.session.get_session_options().enable_mem_pattern is False


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_gets_an_engine_cache_and_fp16_only_for_fp16_models(
    model2d, tmp_path, monkeypatch, precision
):
    """The options reach onnxruntime (run here by the CPU provider in their place)."""
    path = model2d
    if precision == "fp16":
        from zsdeconvnet.export.quantize import quantize_model

        path = tmp_path / "fp16.onnx"
        tiles = [np.random.default_rng(0).random((1, 1, 32, 32), dtype=np.float32)]
        quantize_model(model2d, path, tiles, min_psnr=0, kind="fp16")
    monkeypatch.setenv("ZSDECONVNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(
        model_module,
        "resolve_providers",
        lambda choice: [
            "TensorrtExecutionProvider",
            "CUDAExecutionProvider",
            "CPUExecutionProvider",
        ],
    )
    real, chains = model_module.ort.InferenceSession, []

    def record(model, sess_options=None, providers=None):
        chains.append(providers)
        return real(model, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(model_module.ort, "InferenceSession", record)
    Model(path, provider="tensorrt")
    name, options = chains[-1][0]
    assert name == "TensorrtExecutionProvider" and chains[-1][1:] == chains[0][1:]
    assert options["trt_fp16_enable"] == ("True" if precision == "fp16" else "False")
    assert options["trt_engine_cache_enable"] == "True"
    assert (tmp_path / "cache" / "tensorrt").is_dir()
    assert options["trt_engine_cache_path"] == str(tmp_path / "cache" / "tensorrt")
    assert len(chains) == (2 if precision == "fp16" else 1)


def test_an_unwritable_cache_leaves_tensorrt_without_one(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("ZSDECONVNET_CACHE", str(blocker))
    with caplog.at_level(logging.WARNING):
        chain = model_module.provider_options(
            ["TensorrtExecutionProvider", "CPUExecutionProvider"], False
        )
    assert chain == [
        ("TensorrtExecutionProvider", {"trt_fp16_enable": "False"}),
        "CPUExecutionProvider",
    ]
    assert "will not be cached" in caplog.text
    assert model_module.provider_options(["CUDAExecutionProvider"], True) == [
        "CUDAExecutionProvider"
    ]
