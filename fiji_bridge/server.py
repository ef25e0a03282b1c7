"""A warm prediction server for ImageJ macros (and any local client).

``zsdeconvnet serve`` keeps ONNX sessions loaded so that repeated macro calls skip the start-up
of a new process. It binds to 127.0.0.1 only, requires a token on every request, refuses any
path outside the directories it was told to serve, serves requests concurrently (one thread
each; onnxruntime sessions are thread-safe), survives clients that disconnect, and stops
cleanly on SIGINT/SIGTERM or ``/shutdown``.

Endpoints (GET, parameters in the query string, answers in JSON):

- ``/health``: ``{"ok": true, "version": ...}`` (no token needed)
- ``/predict?token=T&model=M&input=I&output=O[&denoised=D][&tile=N][&overwrite=1]``
- ``/shutdown?token=T``

The port and token are written to a small JSON file (mode 600) that the installed macros read.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import secrets
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from .. import __version__
from ..runtime.errors import InputError
from ..runtime.model import Model
from ..runtime.predict import PredictOptions, Predictor
from . import MAX_CONCURRENT

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
DEFAULT_PORT = 8765
MAX_MODELS = 4


def default_info_file() -> Path:
    """Where the server writes its port and token (read by the macros)."""
    return Path.home() / ".zsdeconvnet" / "server.json"


class PathGuard:
    """Allows only paths inside the served directories (symlinks resolved)."""

    def __init__(self, roots: list[str | os.PathLike]):
        self.roots = [Path(r).resolve() for r in roots]
        if not self.roots:
            raise InputError("give at least one --root directory to serve")
        for root in self.roots:
            if not root.is_dir():
                raise InputError(f"--root '{root}' is not a directory")

    def check(self, value: str, name: str, must_exist: bool) -> Path:
        if not value:
            raise InputError(f"parameter '{name}' is missing")
        if "\x00" in value:  # found by fuzzing: NUL made resolve() raise ValueError
            raise InputError(f"parameter '{name}' contains a NUL character")
        try:  # '~nobody' (no such user) raises RuntimeError, overlong names OSError
            path = Path(value).expanduser()
            resolved = path.resolve() if must_exist else path.parent.resolve() / path.name
        except (OSError, RuntimeError, ValueError) as err:
            raise InputError(f"parameter '{name}' is not a usable path ({err})") from None
        if not any(resolved == r or r in resolved.parents for r in self.roots):
            raise PermissionError(f"{name} '{value}' is outside the served directories")
        if must_exist and not resolved.is_file():
            raise InputError(f"{name} '{value}' does not exist")
        return resolved


class ModelCache:
    """Loaded models by path (least recently used evicted), built once under a lock."""

    def __init__(self, provider: str):
        self.provider = provider
        self._models: dict[Path, Model] = {}
        self._lock = threading.Lock()

    def get(self, path: Path) -> Model:
        with self._lock:
            model = self._models.pop(path, None) or Model(path, provider=self.provider)
            self._models[path] = model
            while len(self._models) > MAX_MODELS:
                self._models.pop(next(iter(self._models)))
            return model


class Handler(BaseHTTPRequestHandler):
    server: PredictionServer
    protocol_version = "HTTP/1.1"
    timeout = 30  # seconds a client may stay silent (slow or half-sent requests are dropped)

    def log_message(self, fmt: str, *args) -> None:  # route to logging, not stderr
        log.info("%s %s", self.address_string(), fmt % args)

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            log.info("client disconnected before the answer")

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        try:
            url = urlparse(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query, max_num_fields=16).items()}
        except ValueError as err:  # over 16 fields (found by fuzzing: it was a 500)
            return self._send(400, {"ok": False, "error": f"malformed request: {err}"})
        if url.path == "/health":
            return self._send(200, {"ok": True, "version": __version__})
        # bytes: compare_digest raises TypeError on non-ASCII str (found by fuzzing)
        given = query.get("token", "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, self.server.token.encode()):
            return self._send(403, {"ok": False, "error": "missing or wrong token"})
        if url.path == "/shutdown":
            self._send(200, {"ok": True})
            threading.Thread(target=self.server.shutdown, daemon=True).start()
            return None
        if url.path != "/predict":
            return self._send(404, {"ok": False, "error": f"unknown endpoint {url.path}"})
        try:
            return self._send(200, self.server.predict(query))
        except PermissionError as err:
            return self._send(403, {"ok": False, "error": str(err)})
        except InputError as err:
            return self._send(200, {"ok": False, "error": str(err)})
        except Exception as err:  # report, keep serving
            log.exception("prediction failed")
            return self._send(500, {"ok": False, "error": f"{type(err).__name__}: {err}"})


class PredictionServer(ThreadingHTTPServer):
    """The HTTP server with its models, token and path guard."""

    daemon_threads = True

    def __init__(
        self,
        port: int,
        roots: list[str],
        token: str | None = None,
        provider: str = "auto",
        client_timeout: float = Handler.timeout,
        concurrent: int = MAX_CONCURRENT,
    ):
        self.guard = PathGuard(roots)
        self.models = ModelCache(provider)
        self.slots = threading.BoundedSemaphore(max(1, concurrent))
        self.token = token or secrets.token_urlsafe(24)
        handler = type("TimedHandler", (Handler,), {"timeout": client_timeout})
        super().__init__((HOST, port), handler)

    def predict(self, query: dict[str, str]) -> dict:
        start = time.perf_counter()
        model = self.guard.check(query.get("model", ""), "model", must_exist=True)
        source = self.guard.check(query.get("input", ""), "input", must_exist=True)
        output = self.guard.check(query.get("output", ""), "output", must_exist=False)
        denoised = query.get("denoised")
        den = self.guard.check(denoised, "denoised", must_exist=False) if denoised else None
        try:
            tile = int(query.get("tile", 512))
        except ValueError:
            raise InputError("tile must be an integer") from None
        options = PredictOptions(tile=tile or None, progress=False)
        predictor = Predictor(self.models.get(model), options)
        with self.slots:
            predictor.predict_file(source, output, den, overwrite=query.get("overwrite") == "1")
        return {
            "ok": True,
            "output": str(output),
            "denoised": str(den) if den else None,
            "seconds": round(time.perf_counter() - start, 3),
        }


def write_info(path: Path, port: int, token: str) -> None:
    """Write ``{"port", "token"}`` readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"port": port, "token": token, "pid": os.getpid()}, f)
    os.replace(tmp, path)


def run_server(
    port: int,
    roots: list[str],
    token: str | None,
    provider: str,
    info_file: Path | None,
    concurrent: int = MAX_CONCURRENT,
) -> None:
    """Serve until SIGINT/SIGTERM or ``/shutdown``; removes the info file on exit."""
    server = PredictionServer(port, roots, token, provider, concurrent=concurrent)
    actual_port = server.server_address[1]
    info = info_file or default_info_file()
    write_info(info, actual_port, server.token)

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    print(f"serving on http://{HOST}:{actual_port} (token in {info})", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        for s, handler in previous.items():
            signal.signal(s, handler)
        with contextlib.suppress(FileNotFoundError):
            info.unlink()
