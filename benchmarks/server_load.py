"""The warm prediction server under load: N concurrent clients x M requests each.

Starts ``zsdeconvnet serve`` as a separate process on 127.0.0.1 (as Fiji users run it), warms
it with one round of N concurrent requests (RSS "before" is taken after it), then N threads each
send M ``/predict`` requests (a small image, each to its own output file) and
some hostile ones (no token, path traversal). Prints errors, the server's resident memory
before and after (psutil), latency percentiles, and every address the server's sockets used
during the run (sampled every 50 ms; all must be 127.0.0.1).

    python benchmarks/server_load.py --clients 8 --requests 100
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import psutil
import tifffile
from zsdeconvnet.fiji_bridge import MAX_CONCURRENT


def get(port: int, path: str, **query) -> tuple[int, dict]:
    url = f"http://127.0.0.1:{port}{path}?{urllib.parse.urlencode(query)}"
    try:
        with urllib.request.urlopen(url, timeout=120) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--model", type=Path, default=Path("models/nuclei2d.onnx"))
    parser.add_argument("--size", type=int, default=128, help="image side (px)")
    parser.add_argument(
        "--concurrent", type=int, default=MAX_CONCURRENT, help="the server's --concurrent"
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="zsd-load-"))
    image = root / "cell.tif"
    rng = np.random.default_rng(0)
    tifffile.imwrite(image, (100 + 50 * rng.random((args.size, args.size))).astype(np.float32))
    model = root / "model.onnx"
    model.write_bytes(args.model.read_bytes())
    info = root / "server.json"
    server = subprocess.Popen(
        [sys.executable, "-m", "zsdeconvnet", "serve", "--root", str(root), "--port", "0",
         "--provider", "cpu", "--info-file", str(info), "--concurrent", str(args.concurrent)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    server.stdout.readline()  # "serving on ..."
    port, token = (json.loads(info.read_text())[k] for k in ("port", "token"))
    proc = psutil.Process(server.pid)
    status, _ = get(port, "/predict", token=token, model=model, input=image, output=root / "w.tif")
    assert status == 200
    # warm-up: one round of concurrent requests (models loaded, onnxruntime's arenas grown)
    warm = [
        threading.Thread(
            target=get, args=(port, "/predict"),
            kwargs=dict(token=token, model=model, input=image, output=root / f"w{c}.tif",
                        overwrite=1),
        )
        for c in range(args.clients)
    ]  # fmt: skip
    for t in warm:
        t.start()
    for t in warm:
        t.join()
    rss_start = proc.memory_info().rss
    rss_trace: list[float] = []
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        for r in range(args.requests):
            out = root / f"out_{c}_{r}.tif"
            start = time.perf_counter()
            status, body = get(
                port, "/predict", token=token, model=model, input=image, output=out, overwrite=1
            )
            took = time.perf_counter() - start
            with lock:
                latencies.append(took)
                if status != 200 or not body.get("ok"):
                    errors.append(f"{status} {body}")
            out.unlink(missing_ok=True)
            if r % 10 == 0:  # hostile requests among the real ones: must be refused
                s1, _ = get(port, "/predict", model=model, input=image, output=out)
                s2, _ = get(port, "/predict", token=token, model=model, input="/etc/passwd",
                            output=out)  # fmt: skip
                s3, _ = get(port, "/predict", token=token, model=model, input=image,
                            output=root / ".." / "escape.tif")  # fmt: skip
                if (s1, s2, s3) != (403, 403, 403):
                    with lock:
                        errors.append(f"hostile request answered {(s1, s2, s3)}")

    # every address the server's sockets use, sampled while the load runs
    addresses: set[str] = set()
    done = threading.Event()

    def watch() -> None:
        ticks = 0
        while not done.wait(0.05):
            for c in proc.net_connections(kind="inet"):
                addresses.update(a.ip for a in (c.laddr, c.raddr) if a)
            ticks += 1
            if ticks % 100 == 0:  # RSS every 5 s
                rss_trace.append(round(proc.memory_info().rss / 2**20, 1))

    watcher = threading.Thread(target=watch)
    watcher.start()
    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    done.set()
    watcher.join()
    rss_end = proc.memory_info().rss
    server.terminate()
    server.wait(10)
    ms = np.array(latencies) * 1e3
    result = {
        "clients": args.clients,
        "requests_per_client": args.requests,
        "image": f"{args.size}x{args.size}",
        "requests": len(latencies),
        "errors": len(errors),
        "first_errors": errors[:3],
        "rss_start_mb": round(rss_start / 2**20, 1),
        "rss_end_mb": round(rss_end / 2**20, 1),
        "rss_every_5s_mb": rss_trace,
        "latency_ms": {
            p: round(float(np.percentile(ms, q)), 1)
            for p, q in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))
        },  # fmt: skip
        "wall_s": round(wall, 1),
        "server_addresses": sorted(addresses),
        "escaped": (root.parent / "escape.tif").exists(),
    }
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
