"""Fiji bridge: macros in a real ImageJ (xvfb), the warm server, and in-process conversion."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from zsdeconvnet.cli.main import main
from zsdeconvnet.fiji_bridge.install import install_macros
from zsdeconvnet.fiji_bridge.server import PredictionServer
from zsdeconvnet.runtime.errors import InputError
from zsdeconvnet.runtime.io import write_tiff
from zsdeconvnet.runtime.model import Model
from zsdeconvnet.runtime.predict import PredictOptions, Predictor

IJ_JAR = "/usr/share/java/ij.jar"
HAVE_IMAGEJ = os.path.isfile(IJ_JAR) and shutil.which("xvfb-run") and shutil.which("java")
# In CI the real ImageJ must run: .ci/run installs it, so a missing ImageJ is a failure there.
needs_imagej = pytest.mark.skipif(
    not HAVE_IMAGEJ and os.environ.get("CI") != "true",
    reason="Debian's imagej and xvfb are not installed (apt-get install imagej xvfb)",
)


@pytest.fixture
def workspace(tmp_path, model2d):
    image = tmp_path / "cell image.tif"  # a space in the name, as users have
    rng = np.random.default_rng(0)
    write_tiff(
        image, (100 + 50 * rng.random((40, 56))).astype(np.float32), "YX", {"X": 65.0, "Y": 65.0}
    )
    model = tmp_path / "model.onnx"
    shutil.copy(model2d, model)
    reference = Predictor(Model(model, provider="cpu"), PredictOptions(progress=False))
    return tmp_path, image, model, reference.predict_array(tifffile.imread(image))


def run_imagej(plugins_dir: Path, macro: str, tmp_path: Path) -> str:
    script = tmp_path / "test.ijm"
    script.write_text(macro)
    done = subprocess.run(
        [
            "xvfb-run",
            "-a",
            "java",
            f"-Dplugins.dir={plugins_dir}",
            "-jar",
            IJ_JAR,
            "-batch",
            str(script),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    return done.stdout + done.stderr


PROBE = """
getPixelSize(unit, pw, ph);
getStatistics(area, mean, min, max);
print("RESULT " + getWidth() + " " + getHeight() + " " + unit + " " + d2s(pw, 6) + " "
      + d2s(mean, 6) + " " + d2s(getPixel(7, 11), 6) + " " + d2s(getPixel(100, 60), 6));
"""


def parse_result(log: str) -> list[str]:
    lines = [ln for ln in log.splitlines() if ln.startswith("RESULT ")]
    assert lines, log
    return lines[-1].split()[1:]


def check_against_runtime(fields, reference):
    _, sr = reference
    width, height, unit, pw, mean, p1, p2 = fields
    assert (int(width), int(height)) == (sr.shape[1], sr.shape[0])
    assert unit in ("µm", "micron", "um") and float(pw) == pytest.approx(0.0325, rel=1e-4)
    assert float(mean) == pytest.approx(float(sr.mean()), rel=1e-4)
    assert float(p1) == pytest.approx(float(sr[11, 7]), rel=1e-4, abs=1e-4)
    assert float(p2) == pytest.approx(float(sr[60, 100]), rel=1e-4, abs=1e-4)


def test_install_writes_the_macros(tmp_path):
    files = install_macros(tmp_path, python="/opt/py/bin/python")
    assert [f.name for f in files] == ["ZS-DeconvNet_Predict.ijm", "ZS-DeconvNet_Train.ijm"]
    text = files[0].read_text()
    assert 'python = "/opt/py/bin/python";' in text and "@PYTHON@" not in text
    with pytest.raises(InputError, match="does not exist"):
        install_macros(tmp_path / "nope")


@needs_imagej
def test_macro_predict_in_real_imagej_matches_the_runtime(workspace):
    tmp, image, model, reference = workspace
    install_macros(tmp, python=sys.executable)
    out = tmp / "out sr.tif"
    log = run_imagej(
        tmp / "plugins",
        f"""
run("ZS-DeconvNet Predict", "model=[{model}] input=[{image}] output=[{out}] route=exec open=yes");
{PROBE}""",
        tmp,
    )
    check_against_runtime(parse_result(log), reference)


@needs_imagej
def test_macro_shows_the_tools_error_and_no_dialog(workspace):
    tmp, image, model, _ = workspace
    install_macros(tmp, python=sys.executable)
    log = run_imagej(
        tmp / "plugins",
        f"""
run("ZS-DeconvNet Predict", "model=[{tmp / "missing.onnx"}] input=[{image}] output=[{tmp / "o.tif"}] route=exec open=no");
print("STILL RUNNING");""",
        tmp,
    )
    assert "ZS-DeconvNet Predict failed: Error: model" in log and "does not exist" in log
    assert "STILL RUNNING" in log and not (tmp / "o.tif").exists()


@pytest.fixture
def server(workspace):
    tmp = workspace[0]
    srv = PredictionServer(0, [str(tmp)], token="secret", provider="cpu")
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def get(srv, path: str, **params):
    query = ("?" + urllib.parse.urlencode({k: str(v) for k, v in params.items()})) if params else ""
    url = f"http://127.0.0.1:{srv.server_address[1]}{path}{query}"
    try:
        with urllib.request.urlopen(url, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@needs_imagej
def test_macro_predict_through_the_warm_server(workspace, server):
    tmp, image, model, reference = workspace
    info = tmp / "server.json"
    info.write_text(json.dumps({"port": server.server_address[1], "token": "secret"}))
    install_macros(tmp, python=sys.executable, server_info=info)
    out = tmp / "served.tif"
    log = run_imagej(
        tmp / "plugins",
        f"""
run("ZS-DeconvNet Predict", "model=[{model}] input=[{image}] output=[{out}] route=server open=yes");
{PROBE}""",
        tmp,
    )
    check_against_runtime(parse_result(log), reference)


def test_server_requires_the_token_and_stays_inside_its_roots(workspace, server):
    tmp, image, model, _ = workspace
    status, body = get(server, "/health")
    assert status == 200 and body["ok"]
    status, body = get(server, "/predict", model=model, input=image, output=tmp / "o.tif")
    assert status == 403 and "token" in body["error"]
    status, body = get(
        server, "/predict", token="secret", model=model, input="/etc/passwd", output=tmp / "o.tif"
    )
    assert status == 403 and "outside the served directories" in body["error"]
    status, body = get(
        server, "/predict", token="secret", model=model, input=image, output=f"{tmp}/../escape.tif"
    )
    assert status == 403 and not (tmp.parent / "escape.tif").exists()
    status, body = get(
        server,
        "/predict",
        token="secret",
        model=tmp / "none.onnx",
        input=image,
        output=tmp / "o.tif",
    )
    assert status == 200 and body["ok"] is False and "does not exist" in body["error"]


def test_server_handles_concurrent_requests_and_disconnects(workspace, server):
    tmp, image, model, reference = workspace
    port = server.server_address[1]
    with socket.create_connection(("127.0.0.1", port)) as rude:  # sends half a request, leaves
        rude.sendall(b"GET /predict?tok")
    results = []

    def request(k):
        results.append(
            get(
                server,
                "/predict",
                token="secret",
                model=model,
                input=image,
                output=tmp / f"c{k}.tif",
            )
        )

    threads = [threading.Thread(target=request, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(results) == 4 and all(s == 200 and b["ok"] for s, b in results)
    for k in range(4):
        np.testing.assert_allclose(
            tifffile.imread(tmp / f"c{k}.tif"), reference[1], rtol=1e-5, atol=1e-5
        )


def test_serve_command_starts_and_shuts_down(tmp_path):
    info = tmp_path / "info.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "zsdeconvnet",
            "serve",
            "--root",
            str(tmp_path),
            "--port",
            "0",
            "--info-file",
            str(info),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 30
    while not info.exists() and time.time() < deadline:
        time.sleep(0.05)
    record = json.loads(info.read_text())
    assert oct(info.stat().st_mode & 0o777) == "0o600"
    url = f"http://127.0.0.1:{record['port']}/shutdown?token={record['token']}"
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert json.loads(answer.read())["ok"]
    assert proc.wait(timeout=30) == 0
    assert not info.exists()


def test_fiji_install_command(tmp_path):
    result = CliRunner().invoke(main, ["fiji", "install", "--imagej-dir", str(tmp_path)])
    assert result.exit_code == 0 and "ZS-DeconvNet_Predict.ijm" in result.output


@needs_imagej
def test_scyjava_in_process_conversion_keeps_calibration(workspace):
    """numpy -> ImagePlus -> numpy with pixel sizes, and a prediction on an ImagePlus."""
    tmp, image, model, reference = workspace
    script = f"""
import numpy as np, tifffile
from zsdeconvnet.fiji_bridge.imagej import start_jvm, to_imageplus, from_imageplus, predict_imageplus
start_jvm()
a = tifffile.imread(r"{image}")
imp = to_imageplus(a, "YX", {{"X": 65.0, "Y": 65.0}}, "cell")
back, axes, sizes = from_imageplus(imp)
assert axes == "YX" and np.array_equal(back, a), axes
assert abs(sizes["X"] - 65.0) < 1e-6, sizes
stack = to_imageplus(np.stack([a, 2 * a, 3 * a]), "ZYX", {{"X": 65.0, "Z": 200.0}})
s, s_axes, s_sizes = from_imageplus(stack)
assert s_axes == "ZYX" and s.shape == (3,) + a.shape and abs(s_sizes["Z"] - 200) < 1e-6
sr, dn = predict_imageplus(imp, r"{model}", provider="cpu")
out, _, out_sizes = from_imageplus(sr)
np.save(r"{tmp / "sr.npy"}", out)
assert abs(out_sizes["X"] - 32.5) < 1e-6 and str(sr.getTitle()) == "cell_deconvolved"
print("OK")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert "OK" in done.stdout, done.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp / "sr.npy"), reference[1], rtol=1e-5, atol=1e-5)


@needs_imagej
def test_macro_train_in_real_imagej_writes_a_model(tmp_path):
    rng = np.random.default_rng(0)
    image = tmp_path / "cells.tif"
    write_tiff(
        image, (100 + 50 * rng.random((136, 136))).astype(np.float32), "YX", {"X": 65.0, "Y": 65.0}
    )
    psf = tmp_path / "psf.tif"
    from zsdeconvnet.physics.optics import pupil_psf

    write_tiff(psf, pupil_psf(9, 65.0, 1.2, 525)[0], "YX", {"X": 65.0, "Y": 65.0})
    model = tmp_path / "cells.onnx"
    install_macros(tmp_path, python=sys.executable)
    log = run_imagej(
        tmp_path / "plugins",
        f"""
run("ZS-DeconvNet Train", "input=[{image}] psf=[{psf}] model=[{model}] iterations=2 preset=fast open=no");
""",
        tmp_path,
    )
    assert f"ZS-DeconvNet Train: wrote {model}" in log, log
    assert Model(model, provider="cpu").metadata.training["iterations"] == 2
