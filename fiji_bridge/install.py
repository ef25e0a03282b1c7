"""Install the ZS-DeconvNet macro commands into an ImageJ or Fiji folder.

The macros land in ``<dir>/plugins/ZS-DeconvNet/`` and appear as *Plugins > ZS-DeconvNet >
ZS-DeconvNet Predict / Train*, callable from macros with ``run("ZS-DeconvNet Predict", ...)``.
They call this Python installation (its absolute path is written into them), so no
deep-learning library is ever installed into Java.
"""

from __future__ import annotations

import os
import sys
from importlib import resources
from pathlib import Path

from ..runtime.errors import InputError, describe
from ..runtime.io import atomic_output
from .server import default_info_file

MACROS = ("ZS-DeconvNet_Predict.ijm", "ZS-DeconvNet_Train.ijm")
SUBFOLDER = "ZS-DeconvNet"


def _literal(text: str) -> str:
    """Escape a value for an ImageJ macro string literal."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def install_macros(
    imagej_dir: str | os.PathLike,
    python: str | None = None,
    server_info: str | os.PathLike | None = None,
) -> list[Path]:
    """Write the macro commands into ``imagej_dir/plugins/ZS-DeconvNet``.

    Parameters
    ----------
    imagej_dir : path-like
        The ImageJ or Fiji folder (the one holding ``plugins/``), or a user plugin folder's
        parent such as ``~/.imagej``.
    python : str, optional
        Python executable that has zsdeconvnet installed (default: this one).
    server_info : path-like, optional
        Where ``zsdeconvnet serve`` writes its port and token (default: ~/.zsdeconvnet).

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    root = Path(imagej_dir)
    if not root.is_dir():
        raise InputError(
            f"ImageJ folder {describe(root)} does not exist; give the folder that "
            "holds (or will hold) plugins/, e.g. Fiji.app"
        )
    target = root / "plugins" / SUBFOLDER
    target.mkdir(parents=True, exist_ok=True)
    values = {
        "@PYTHON@": _literal(str(Path(python or sys.executable).absolute())),
        "@SERVER_INFO@": _literal(str(Path(server_info or default_info_file()).absolute())),
    }
    written = []
    for name in MACROS:
        text = (resources.files("zsdeconvnet.fiji_bridge") / "macros" / name).read_text()
        for key, value in values.items():
            text = text.replace(key, value)
        path = target / name
        with atomic_output(path) as tmp:
            tmp.write_text(text)
        written.append(path)
    return written
