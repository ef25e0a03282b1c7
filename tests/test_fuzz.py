"""Fuzzing every reader of a user's file or request: a result, or our own clear error.

Inputs are real files made here (TIFF, OME-TIFF, compressed TIFF, PSF, ONNX model, training
config, server requests), mutated by hypothesis (bytes flipped, overwritten, inserted, deleted,
truncated) or generated from the format's structure (metadata values, JSON fields). Allowed
outcomes: success, or :class:`InputError` (what the CLI prints as one line). Anything else
(another exception, a hang past the deadline, a crash) fails the test; inputs that once failed
are kept in ``tests/fuzz_corpus/`` and replayed by :func:`test_corpus_replays`. The suite
replays a fixed set of inputs (derandomised); ``ZSD_FUZZ_RANDOM=1`` explores new ones.

Examples per target: ``ZSD_FUZZ_EXAMPLES`` (default 150 here; the figures in
docs/RELIABILITY.md come from ``make fuzz``). ``ZSD_FUZZ_REPORT=FILE`` writes, per target, how
many inputs were tried and how many were refused with our error (JSON).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import socket
import threading
import traceback
from pathlib import Path

import numpy as np
import onnx
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zsdeconvnet.physics.psf import read_psf
from zsdeconvnet.runtime.errors import InputError
from zsdeconvnet.runtime.io import read_image
from zsdeconvnet.runtime.metadata import ModelMetadata
from zsdeconvnet.runtime.model import Model
from zsdeconvnet.training.config import TrainConfig, preset

EXAMPLES = int(os.environ.get("ZSD_FUZZ_EXAMPLES", "150"))
EXPLORE = os.environ.get("ZSD_FUZZ_RANDOM") == "1"
CORPUS = Path(__file__).parent / "fuzz_corpus"
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=5000,  # ms per input: a slow reader fails (a stuck one: the alarm in allowed())
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
    # the suite replays the same inputs every run; `make fuzz` explores new ones
    derandomize=not EXPLORE,
)
STUCK_SECONDS = 20
REPORT = os.environ.get("ZSD_FUZZ_REPORT")
#: per target (test id): inputs tried, inputs refused with InputError
COUNTS: dict[str, list[int]] = {}


class Stuck(BaseException):
    """Raised by the alarm in :func:`allowed`. Not an ``Exception``: readers that catch every
    ``Exception`` while walking a damaged file (tifffile does) cannot swallow it."""


def mutations(base: bytes, max_edits: int = 6) -> st.SearchStrategy[bytes]:
    """Byte-level mutants of ``base``."""
    edit = st.tuples(
        st.sampled_from(["flip", "set", "insert", "delete", "truncate", "dup"]),
        st.integers(0, max(0, len(base) - 1)),
        st.binary(min_size=1, max_size=16),
    )

    def apply(edits) -> bytes:
        data = bytearray(base)
        for kind, pos, blob in edits:
            pos = min(pos, max(0, len(data) - 1))
            if kind == "flip" and data:
                data[pos] ^= 1 << (blob[0] % 8)
            elif kind == "set" and data:
                data[pos : pos + len(blob)] = blob
            elif kind == "insert":
                data[pos:pos] = blob
            elif kind == "delete":
                del data[pos : pos + blob[0] % 64 + 1]
            elif kind == "truncate":
                del data[pos:]
            elif kind == "dup":
                data[pos:pos] = data[pos : pos + blob[0]]
        return bytes(data)

    return st.lists(edit, min_size=1, max_size=max_edits).map(apply)


def allowed(call, data: bytes | None = None, kind: str | None = None) -> None:
    """Run ``call``; only success or InputError may come out.

    Any other exception saves ``data`` into the corpus (``tests/fuzz_corpus/KIND/``) before it
    fails the test, so the input that broke a reader is kept once the reader is fixed.
    """

    def stuck(signum, frame):
        raise Stuck(f"reader stuck for {STUCK_SECONDS} s")

    counts = _count()
    previous = signal.signal(signal.SIGALRM, stuck)
    signal.alarm(STUCK_SECONDS)
    try:
        call()
    except InputError as err:
        assert str(err).strip() and "\n" not in str(err).strip()
        counts[1] += 1
    except (Exception, Stuck):
        if data is not None and kind is not None:
            folder = CORPUS / kind
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{hashlib.sha1(data).hexdigest()[:16]}.bin").write_bytes(data)
        raise
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _count() -> list[int]:
    """The counters of the running test (one more input tried)."""
    name = os.environ.get("PYTEST_CURRENT_TEST", "?").split("::")[-1].split(" ")[0]
    counts = COUNTS.setdefault(name, [0, 0])
    counts[0] += 1
    return counts


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    if REPORT:
        rows = {name: {"inputs": n, "refused": r} for name, (n, r) in COUNTS.items()}
        Path(REPORT).write_text(json.dumps(rows, indent=1))


def _touch_pixels(image) -> None:
    data = image.data
    index = tuple(slice(0, min(4, n)) for n in data.shape)
    np.asarray(data[index], np.float64).sum()


# -- seeds: real files --------------------------------------------------------------------------


def _seed_files() -> dict[str, bytes]:
    import io

    rng = np.random.default_rng(0)
    files = {}
    buf = io.BytesIO()
    tifffile.imwrite(
        buf,
        rng.integers(0, 4000, (16, 20), dtype=np.uint16),
        imagej=True,
        resolution=(1 / 0.065, 1 / 0.065),
        metadata={"unit": "um", "axes": "YX"},
    )
    files["imagej"] = buf.getvalue()
    buf = io.BytesIO()
    tifffile.imwrite(
        buf,
        rng.random((3, 8, 12), dtype=np.float32),
        ome=True,
        metadata={"axes": "ZYX", "PhysicalSizeX": 0.1, "PhysicalSizeZ": 0.2},
    )
    files["ome"] = buf.getvalue()
    buf = io.BytesIO()
    tifffile.imwrite(buf, rng.random((2, 16, 16)).astype(np.float32), compression="zlib")
    files["zlib"] = buf.getvalue()
    y, x = np.mgrid[-4:5, -4:5]
    psf = np.exp(-(x**2 + y**2) / 4.0).astype(np.float32)
    buf = io.BytesIO()
    tifffile.imwrite(
        buf,
        psf / psf.sum(),
        imagej=True,
        resolution=(1 / 0.065, 1 / 0.065),
        metadata={"unit": "um", "axes": "YX"},
    )
    files["psf"] = buf.getvalue()
    return files


SEEDS = _seed_files()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _write(folder: Path, data: bytes, name: str = "input.tif") -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


# -- targets ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["imagej", "ome", "zlib"])
def test_tiff_reader(kind, scratch):
    @FUZZ
    @given(mutations(SEEDS[kind]))
    def check(data):
        path = _write(scratch, data)
        allowed(lambda: _touch_pixels(read_image(path)), data, "tiff")

    check()


def test_psf_reader(scratch):
    @FUZZ
    @given(mutations(SEEDS["psf"]))
    def check(data):
        path = _write(scratch, data, "psf.tif")
        allowed(lambda: read_psf(path, 2), data, "psf")

    check()


@pytest.fixture(scope="module")
def model_bytes(model2d) -> bytes:
    return Path(model2d).read_bytes()


@pytest.fixture(scope="module")
def model_props(model2d) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(model2d).metadata_props}


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False)  # training sets FTZ
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def test_onnx_metadata_reader(model_props):
    keys = sorted(model_props)

    @FUZZ
    @given(
        st.dictionaries(st.sampled_from(keys), json_values.map(json.dumps), max_size=6),
        st.dictionaries(st.sampled_from(keys), st.text(max_size=30), max_size=3),
        st.lists(st.sampled_from(keys), max_size=3),
    )
    def check(replaced, raw_text, dropped):
        props = dict(model_props)
        props.update(replaced)
        props.update(raw_text)
        for key in dropped:
            props.pop(key, None)
        allowed(
            lambda: ModelMetadata.from_props(props, "fuzzed model"),
            json.dumps(props).encode(),
            "metadata",
        )

    check()


def test_onnx_model_file(model_bytes, scratch):
    # each input starts an onnxruntime session: a third of the inputs in CI, all when exploring
    @settings(FUZZ, max_examples=EXAMPLES if EXPLORE else max(10, EXAMPLES // 3))
    @given(mutations(model_bytes, max_edits=3))
    def check(data):
        path = _write(scratch, data, "model.onnx")
        allowed(lambda: Model(path, provider="cpu"), data, "onnx")

    check()


def test_training_config_loader(scratch):
    base = json.loads(preset("fast").to_json())
    names = sorted(base)

    @FUZZ
    @given(
        st.dictionaries(st.sampled_from(names), json_values, max_size=5),
        st.one_of(st.none(), mutations(json.dumps(base).encode(), max_edits=3)),
    )
    def check(fields, raw):
        if raw is not None:
            data = raw
        else:
            data = json.dumps({**base, **fields}, allow_nan=True).encode()
        path = _write(scratch, data, "config.json")
        allowed(lambda: TrainConfig.load(path), data, "config")

    check()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from zsdeconvnet.fiji_bridge.server import PredictionServer

    root = tmp_path_factory.mktemp("served")
    server = PredictionServer(0, [str(root)], token="fuzztoken", provider="cpu")
    errors: list[str] = []
    server.handle_error = lambda request, address: errors.append(traceback.format_exc())  # type: ignore
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, errors
    server.shutdown()


def _raw_request(port: int, line: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(line + b"\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        chunks = []
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def test_server_request_parser(server):
    srv, errors = server
    port = srv.server_address[1]
    base = b"GET /predict?token=fuzztoken&model=m.onnx&input=a.tif&output=b.tif&tile=256 HTTP/1.1"

    @FUZZ
    @given(mutations(base, max_edits=4))
    def check(line):
        _count()
        answer = _raw_request(port, line.replace(b"\r", b"").replace(b"\n", b""))
        if not answer:  # http.server closes on some garbage without an answer
            return
        if not answer.startswith(b"HTTP/1."):  # HTTP/0.9 (no version): a bare body, no status
            if answer.startswith(b"{"):
                assert "ok" in json.loads(answer)  # our JSON answer
            else:
                assert answer.startswith(b"<!DOCTYPE HTML>") and b"Error code: " in answer
            return
        status = int(answer.split(b" ", 2)[1])
        assert status < 500 or status == 501, answer[:300]  # 501: unknown method

    check()
    assert not errors, errors[:3]
    # regression: a non-ASCII token made hmac.compare_digest raise inside the handler
    answer = _raw_request(port, "GET /predict?token=été HTTP/1.1".encode())
    assert b" 403 " in answer.split(b"\r\n")[0] and not errors
    # regression: more than 16 query fields was a 500
    line = "/predict?" + "&".join(f"f{i}=1" for i in range(20))
    answer = _raw_request(port, f"GET {line} HTTP/1.1".encode())
    assert b" 400 " in answer.split(b"\r\n")[0] and not errors, (answer[:200], errors[:1])
    # regression: a NUL or an unknown user's home in a path was a 500
    for bad in ("model=a%00b", "model=~nosuchuser/m.onnx"):
        answer = _raw_request(port, f"GET /predict?token=fuzztoken&{bad} HTTP/1.1".encode())
        assert b" 200 " in answer.split(b"\r\n")[0] and b'"ok": false' in answer
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/health")
    assert conn.getresponse().status == 200  # still serving


CORPUS_FILES = sorted(f for f in CORPUS.rglob("*") if f.is_file()) if CORPUS.is_dir() else []


@pytest.mark.parametrize("item", CORPUS_FILES, ids=lambda f: f"{f.parent.name}/{f.name}")
def test_corpus_replays(item, scratch):
    """Inputs that once broke a reader (found by the targets above), kept as regressions."""
    readers = {
        "tiff": lambda p: _touch_pixels(read_image(p)),
        "psf": lambda p: read_psf(p, 2),
        "config": lambda p: TrainConfig.load(p),
        "onnx": lambda p: Model(p, provider="cpu"),
        "metadata": lambda p: ModelMetadata.from_props(json.loads(p.read_text()), "corpus"),
    }
    path = _write(scratch, item.read_bytes(), item.name)
    allowed(lambda: readers[item.parent.name](path))
