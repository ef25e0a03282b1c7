"""An ONNX model file and its onnxruntime session.

Loading a model never executes code from it: an ONNX file is a graph of standard operators,
and only onnxruntime reads it. The file is handed to onnxruntime as bytes, so a model that
points at external data files (which could name any path on the machine) cannot load them:
zsdeconvnet models are self-contained. A ``.zip`` model package (bioimage.io) is opened by
extracting its one ONNX file, never writing outside a private temporary folder.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .errors import InputError, describe
from .metadata import INPUT_NAME, OUTPUT_NAMES, ModelMetadata
from .selfcheck import int8_kernels, run_self_check
from .stages import split_stages

log = logging.getLogger(__name__)

#: Execution providers tried, in order, for each ``--provider`` choice.
PROVIDER_CHAINS: dict[str, list[str]] = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
PROVIDER_CHOICES = ("auto", *PROVIDER_CHAINS)
#: Where TensorRT keeps its built engines (TensorRT tunes kernels for each input shape when it
#: builds one; ``ZSDECONVNET_CACHE`` overrides the folder that holds ``tensorrt/``)
CACHE_ENV = "ZSDECONVNET_CACHE"
#: Larger files are refused before reading (protobuf's own limit is 2 GB; ours are ~4-25 MB)
MAX_MODEL_BYTES = 1 << 31


def installed_onnxruntime_distributions() -> list[str]:
    """Names of the installed distributions that provide the ``onnxruntime`` module.

    ``onnxruntime`` and ``onnxruntime-gpu`` install the same module; having both makes the
    one imported depend on install order. ``zsdeconvnet info`` warns about it.
    """
    found = []
    for name in ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino"):
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


def resolve_providers(choice: str) -> list[str]:
    """Map a provider choice (``auto``, ``cpu``, ``cuda``, ``tensorrt``) to available providers.

    Raises
    ------
    InputError
        If a GPU provider was asked for and this onnxruntime build does not have it.
    """
    available = ort.get_available_providers()
    if choice == "auto":
        choice = "cuda" if "CUDAExecutionProvider" in available else "cpu"
    if choice not in PROVIDER_CHAINS:
        raise InputError(f"unknown provider {choice!r}; choose one of {PROVIDER_CHOICES}")
    wanted = PROVIDER_CHAINS[choice][0]
    if wanted not in available:
        raise InputError(
            f"provider {choice!r} was asked for but this onnxruntime offers only {available}; "
            "install onnxruntime-gpu in place of onnxruntime (see README, 'GPU install') "
            "or use --provider cpu"
        )
    return [p for p in PROVIDER_CHAINS[choice] if p in available]


def cache_dir() -> Path:
    """zsdeconvnet's cache folder: ``$ZSDECONVNET_CACHE``, else ``$XDG_CACHE_HOME/zsdeconvnet``,
    else ``~/.cache/zsdeconvnet``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "zsdeconvnet"


def provider_options(providers: list[str], fp16: bool) -> list:
    """The provider chain as onnxruntime's ``providers=`` takes it, with our options.

    TensorRT: engines are cached on disk (``cache_dir()/tensorrt``), so a later run of the same
    model and tile shape reuses the engine instead of building it again; fp16 kernels are
    allowed only for models exported as fp16, whose output was checked against fp32 by
    ``export --quantize fp16`` (TensorRT picks layer precisions from the flags it is given, so
    without the flag it may run an fp16 graph in fp32). The cache folder is made here; when it
    cannot be, TensorRT runs without a cache (said in the log). Not measured on a GPU yet.
    Other providers: their defaults.
    """
    chain: list = []
    for name in providers:
        if name != "TensorrtExecutionProvider":
            chain.append(name)
            continue
        options = {"trt_fp16_enable": "True" if fp16 else "False"}
        folder = cache_dir() / "tensorrt"
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            log.warning("TensorRT engines will not be cached (%s: %s)", folder, err.strerror)
        else:
            options |= {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(folder)}
        chain.append((name, options))
    return chain


#: Whether this process's onnxruntime environment holds one CPU arena for every session
#: (``shared_cpu_arena``; None: not tried yet)
_SHARED_ARENA: bool | None = None


def shared_cpu_arena() -> bool:
    """Register one CPU memory arena with onnxruntime's environment, once per process.

    Each onnxruntime session otherwise keeps its own arena, which holds its largest run's
    memory for the session's life: the two stages of a model (``stages()``) then held both
    peaks side by side (``benchmarks/stage_memory.py``: 1715 MB against 1111 MB shared, the
    time within this shared CPU's run-to-run spread, 1.05 s against 1.12 s). Sessions opt in
    with ``session.use_env_allocators``. Returns whether the environment has one (registered
    here or by another library before)."""
    global _SHARED_ARENA
    if _SHARED_ARENA is None:
        try:
            info = ort.OrtMemoryInfo(
                "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
            )
            ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, -1, -1, -1))
            _SHARED_ARENA = True
        except Exception as err:  # onnxruntime raises its own exception types
            _SHARED_ARENA = "already" in str(err).lower()
            log.debug("no shared CPU arena registered here: %s", err)
    return _SHARED_ARENA


def session_options(providers: list[str], threads: int | None):
    """onnxruntime's session options as zsdeconvnet sets them."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if providers == ["CPUExecutionProvider"]:
        # The memory pattern pre-plans one block for all of a run's tensors; on this CPU it
        # cost memory and time (benchmarks/session_memory.py: a 3D tile 2.95 -> 1.59 GB,
        # a 2D 768^2 tile 1.63 -> 1.13 GB, both faster without it). Not measured on GPUs.
        options.enable_mem_pattern = False
        if shared_cpu_arena():
            options.add_session_config_entry("session.use_env_allocators", "1")
    if threads:
        options.intra_op_num_threads = int(threads)
    return options


def is_fp16(metadata: ModelMetadata) -> bool:
    """Whether the model was exported with ``--quantize fp16``."""
    quantization = metadata.training.get("quantization") or {}
    return str(quantization.get("type", "")).startswith("fp16")


class Stage:
    """One stage of a model (``runtime.stages``) as a session: one input, one output."""

    def __init__(self, session, input_name: str, output_name: str):
        self.session, self.input_name, self.output_name = session, input_name, output_name
        self.cpu = session.get_providers()[0] == "CPUExecutionProvider"

    def run(self, batch: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Run a batch ``[N, 1, *spatial]`` (float32, C-contiguous); the CPU provider writes
        into ``out`` directly when it is given."""
        if out is None:
            return self.session.run([self.output_name], {self.input_name: batch})[0]
        if not self.cpu:
            out[...] = self.session.run([self.output_name], {self.input_name: batch})[0]
            return out
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.input_name, batch)
        shape = list(out.shape)
        binding.bind_output(self.output_name, "cpu", 0, np.float32, shape, out.ctypes.data)
        self.session.run_with_iobinding(binding)
        return out


class Model:
    """A zsdeconvnet ONNX model ready to run.

    Parameters
    ----------
    path : path-like
        The ``.onnx`` file written by ``zsdeconvnet export``.
    provider : str
        ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``tensorrt``.
    threads : int, optional
        Intra-op threads for the CPU provider (default: onnxruntime's choice).
    io_binding : bool
        Run through onnxruntime's I/O binding: outputs are allocated by the provider (on a GPU,
        in device memory) and copied to the host once, instead of through numpy twice.
    self_check : bool
        Run a reduced-precision model's check tile once and refuse the model if it misses its
        gate on this machine (``runtime.selfcheck``). Off only for benchmarks that measure it.

    Attributes
    ----------
    metadata : ModelMetadata
        The validated contract read from the file.
    active_provider : str
        The provider that really runs the graph (onnxruntime falls back silently; we do not).
    check_psnr_db : dict or None
        What the self-check measured here (dB per output), for reduced-precision models.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        provider: str = "auto",
        threads: int | None = None,
        io_binding: bool = False,
        self_check: bool = True,
    ):
        self.path = Path(path)
        self.io_binding = io_binding
        if not self.path.is_file():
            raise InputError(f"model {describe(path)} does not exist; check the path")
        if self.path.suffix.lower() == ".zip":
            from .package import onnx_from_package

            model_bytes = onnx_from_package(self.path, MAX_MODEL_BYTES)
        else:
            size = self.path.stat().st_size
            if size > MAX_MODEL_BYTES:
                raise InputError(
                    f"model {describe(path)} is {size / 2**30:.1f} GiB, larger than any ONNX "
                    "model can be; give the .onnx file written by 'zsdeconvnet export'"
                )
            model_bytes = self.path.read_bytes()
        providers = resolve_providers(provider)
        options = session_options(providers, threads)
        chain = provider_options(providers, False)
        self.session = self._session(model_bytes, options, chain)
        self.metadata = self._read_metadata()
        if providers[0] == "TensorrtExecutionProvider" and is_fp16(self.metadata):
            # the fp16 flag depends on the metadata, which only a session can read: a
            # second session, with fp16 kernels allowed (start-up cost not measured here)
            chain = provider_options(providers, True)
            self.session = self._session(model_bytes, options, chain)
        # kept for the stage sessions, made on first use (stages(); False: not tried yet)
        self._bytes, self._options, self._chain = model_bytes, options, chain
        self._stages: tuple[Stage, Stage] | None | bool = False
        self._check_signature()
        self.active_provider = self.session.get_providers()[0]
        if self.active_provider != providers[0]:
            log.warning(
                "asked for %s but onnxruntime runs %s (is the CUDA/TensorRT runtime installed?)",
                providers[0],
                self.active_provider,
            )
        self.check_psnr_db = None
        if self_check and self.metadata.self_check is not None:
            cpu = self.active_provider == "CPUExecutionProvider"
            self.check_psnr_db = run_self_check(
                self.run,
                self.metadata.self_check,
                f"model {describe(self.path)}",
                int8_kernels() if cpu else self.active_provider,
            )
            log.info("self-check on this machine: %s dB", str(self.check_psnr_db))

    def _session(self, model_bytes: bytes, options, providers: list):
        path = self.path
        try:
            return ort.InferenceSession(model_bytes, sess_options=options, providers=providers)
        except Exception as err:  # onnxruntime raises several private exception types
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            if "external" in first.lower():
                raise InputError(
                    f"model {describe(path)} refers to external data files; zsdeconvnet models "
                    "are self-contained (re-export it)"
                ) from None
            raise InputError(
                f"model {describe(path)} is not a readable ONNX model ({first[:160]}); "
                "use a .onnx file written by 'zsdeconvnet export'"
            ) from None

    def _read_metadata(self) -> ModelMetadata:
        path = self.path
        try:
            props = self.session.get_modelmeta().custom_metadata_map
        except UnicodeDecodeError:  # onnxruntime decodes the strings as UTF-8 (found by fuzzing)
            raise InputError(
                f"model {describe(path)} has metadata that is not UTF-8 text; it is damaged "
                "(re-export it with 'zsdeconvnet export')"
            ) from None
        return ModelMetadata.from_props(props, source=f"model {describe(path)}")

    def _check_signature(self) -> None:
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != [INPUT_NAME] or sorted(outputs) != sorted(OUTPUT_NAMES):
            raise InputError(
                f"model {describe(self.path)} has inputs {inputs} and outputs {outputs}; "
                f"expected input {INPUT_NAME!r} and outputs {list(OUTPUT_NAMES)} "
                "(re-export it with 'zsdeconvnet export')"
            )
        rank = len(self.session.get_inputs()[0].shape)
        if rank != self.metadata.ndim + 2:
            raise InputError(
                f"model {describe(self.path)} input has rank {rank} but its metadata says "
                f"{self.metadata.ndim}D; the file is inconsistent, re-export it"
            )

    def run(
        self, batch: np.ndarray, out: tuple[np.ndarray, np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Run a batch ``[N, 1, *spatial]`` (float32, normalised domain).

        ``out``: C-contiguous float32 arrays of the two output shapes to write into (the CPU
        provider writes there directly: no output allocation); other providers copy into them.

        Returns
        -------
        denoised, deconvolved : numpy.ndarray
            ``[N, 1, *spatial]`` and ``[N, 1, *spatial * output_scale]``.
        """
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if out is not None:
            if self.active_provider == "CPUExecutionProvider":
                binding = self.session.io_binding()
                binding.bind_cpu_input(INPUT_NAME, batch)
                for name, buffer in zip(OUTPUT_NAMES, out):
                    binding.bind_output(
                        name, "cpu", 0, np.float32, list(buffer.shape), buffer.ctypes.data
                    )
                self.session.run_with_iobinding(binding)
            else:
                for buffer, result in zip(out, self.run(batch)):
                    buffer[...] = result
            return out
        if self.io_binding:
            return self._run_bound(batch)
        denoised, deconvolved = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: batch})
        return denoised, deconvolved

    def stages(self) -> tuple[Stage, Stage] | None:
        """Stage 1 (``input`` -> ``denoised``) and stage 2 (``denoised`` -> ``deconvolved``) as
        sessions of their own (``runtime.stages``), made on the first call; ``None`` when the
        graph cannot be cut or the two stages together do not reproduce the whole model on a
        check tile (then the whole model runs, as for older models)."""
        if self._stages is False:
            self._stages = None
            cut = split_stages(self._bytes)
            if cut is not None:
                stage1, stage2 = (
                    Stage(self._session(b, self._options, self._chain), name, out)
                    for b, name, out in zip(cut, (INPUT_NAME, OUTPUT_NAMES[0]), OUTPUT_NAMES)
                )
                if self._stages_agree(stage1, stage2):
                    self._stages = stage1, stage2
        return self._stages

    def _stages_agree(self, stage1: Stage, stage2: Stage) -> bool:
        """Whether stage 2 after stage 1 gives the whole model's outputs on a noise tile of
        four size multiples per axis (to 1e-6 of their range: the same operations)."""
        shape = (1, 1, *(4 * m for m in self.metadata.size_multiple))
        tile = np.random.default_rng(0).uniform(0.0, 1.0, shape).astype(np.float32)
        whole = self.run(tile)
        den = stage1.run(tile)
        staged = den, stage2.run(den)
        worst = max(float(np.abs(a - b).max() / (np.ptp(a) or 1.0)) for a, b in zip(whole, staged))
        if worst > 1e-6:
            log.warning(
                "the model's two stages, run one after the other, differ from the whole model "
                "by %.2g of the output range; tiles run the whole model",
                worst,
            )
        return worst <= 1e-6

    def _run_bound(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        binding = self.session.io_binding()
        device = "cuda" if self.active_provider != "CPUExecutionProvider" else "cpu"
        value = ort.OrtValue.ortvalue_from_numpy(batch, device, 0)
        binding.bind_ortvalue_input(INPUT_NAME, value)
        for name in OUTPUT_NAMES:
            binding.bind_output(name, device)
        self.session.run_with_iobinding(binding)
        denoised, deconvolved = binding.copy_outputs_to_cpu()
        return denoised, deconvolved
