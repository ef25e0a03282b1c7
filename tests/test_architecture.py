"""The import directions of docs/ARCHITECTURE.md, read from the source (imports inside
functions included), so a lazy import cannot slip a forbidden arrow past the test."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROOMS = ("runtime", "physics", "training", "export", "cli", "fiji_bridge", "napari_plugin")
#: room -> what it must never import (rooms of this package, or third-party top-level modules)
FORBIDDEN = {
    "runtime": {"torch", "scipy", "skimage", "physics", "training", "export", "cli"},
    "physics": {"torch", "training", "export", "cli"},
    "training": {"export", "cli"},
    "export": {"cli"},
    "fiji_bridge": {"cli"},
    "napari_plugin": {"cli"},
    "cli": set(),
}


def imports_of(path: Path, source: str | None = None) -> set[str]:
    """Top-level names a module imports: third-party modules, or rooms of this package."""
    room = path.relative_to(ROOT).parts[0]
    found = set()
    text = path.read_text() if source is None else source
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                found.add(parts[1] if parts[0] == "zsdeconvnet" and len(parts) > 1 else parts[0])
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 0:
                parts = module.split(".")
                found.add(parts[1] if parts[0] == "zsdeconvnet" and len(parts) > 1 else parts[0])
            elif node.level == 1:  # from .x import y: the same room
                found.add(room)
            else:  # from ..x import y (level 2, files directly in a room)
                head = module.split(".")[0] if module else ""
                found |= {head} if head else {alias.name for alias in node.names}
    return found


def modules(room: str) -> list[Path]:
    return sorted((ROOT / room).rglob("*.py"))


@pytest.mark.parametrize("room", ROOMS)
def test_imports_point_the_way_the_architecture_says(room):
    assert modules(room), f"{room}/ has no modules"
    broken = {
        str(path.relative_to(ROOT)): sorted(imports_of(path) & FORBIDDEN[room])
        for path in modules(room)
    }
    assert {k: v for k, v in broken.items() if v} == {}


def test_nothing_but_the_entry_point_imports_cli():
    outside = [p for p in ROOT.glob("*.py")] + [
        p for room in ROOMS if room != "cli" for p in modules(room)
    ]
    assert [str(p.relative_to(ROOT)) for p in outside if "cli" in imports_of(p)] == ["__main__.py"]


def test_the_rule_test_can_fail():
    """Forbidden lazy imports, written the way the code writes imports, are found."""
    source = "def f():\n    import torch\n    from ..training import trainer\n"
    found = imports_of(ROOT / "physics" / "probe.py", source)
    assert found & FORBIDDEN["physics"] == {"torch", "training"}
    assert imports_of(ROOT / "runtime" / "probe.py", "from ..physics.psf import PSF\n") == {
        "physics"
    }


def test_the_physics_commands_run_with_torch_blocked(tmp_path):
    """psf, simulate and evaluate in a process where importing torch fails."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "class NoTorch:  # as if torch were not installed\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        "from zsdeconvnet.cli.main import main\n"
        "for argv in (['psf', '-o', 'p.tif', '--na', '1.4', '--wavelength', '525',"
        " '--pixel-size', '65'], ['simulate', '-o', 'sim', '--size', '64'],"
        " ['evaluate', 'sim/noisy.tif', '--reference', 'sim/reference.tif']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as e:\n"
        "        assert e.code in (0, None), (argv, e.code)\n"
        "import zsdeconvnet.physics.richardson_lucy, zsdeconvnet.physics.sim_reconstruct\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('zsdeconvnet.training'))\n"
        "print('TRAINING', loaded, 'torch' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "TRAINING [] False" in done.stdout
