"""``zsdeconvnet fiji ...`` and ``zsdeconvnet serve``."""

from __future__ import annotations

from pathlib import Path

import click

from ..fiji_bridge import MAX_CONCURRENT
from ..runtime.errors import InputError
from .main import friendly_errors


@click.group()
def fiji() -> None:
    """Use zsdeconvnet from Fiji / ImageJ (macros, a warm server, pyimagej).

    \b
    Examples:
      zsdeconvnet fiji install --imagej-dir ~/Fiji.app
      zsdeconvnet serve --root ~/data &
      zsdeconvnet fiji launch --fiji ~/Fiji.app
    """


@fiji.command()
@click.option(
    "--imagej-dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="The ImageJ or Fiji folder (holding plugins/), e.g. Fiji.app or ~/.imagej.",
)
@click.option(
    "--python",
    "python",
    default=None,
    help="Python executable with zsdeconvnet (default: this one).",
)
@click.option(
    "--server-info",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The server's --info-file, if not the default ~/.zsdeconvnet/server.json.",
)
@friendly_errors
def install(imagej_dir, python, server_info):
    """Install the "ZS-DeconvNet Predict" and "ZS-DeconvNet Train" commands.

    \b
    Then, in a macro:
      run("ZS-DeconvNet Predict", "model=[/d/m.onnx] input=[/d/a.tif] output=[/d/a_sr.tif]");
    """
    from ..fiji_bridge.install import install_macros

    for path in install_macros(imagej_dir, python, server_info):
        click.echo(f"installed {path}")


@fiji.command()
@click.option(
    "--fiji",
    "fiji_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Path of a Fiji.app.",
)
@friendly_errors
def launch(fiji_dir):
    """Start Fiji through pyimagej with the ZS-DeconvNet commands installed.

    Needs the 'fiji' extra (pyimagej) and a local Fiji.app; pyimagej resolves ImageJ2 from
    Maven repositories on first start, so that start needs internet access.
    """
    try:
        import imagej
    except ImportError:
        raise InputError("'fiji launch' needs pyimagej: pip install 'zsdeconvnet[fiji]'") from None
    from ..fiji_bridge.install import install_macros

    install_macros(fiji_dir)
    ij = imagej.init(str(fiji_dir), mode="interactive")
    ij.ui().showUI()
    click.echo("Fiji is running; ZS-DeconvNet commands are under Plugins > ZS-DeconvNet")


@click.command()
@click.option("--port", type=int, default=8765, show_default=True, help="0 picks a free port.")
@click.option(
    "--root",
    "roots",
    multiple=True,
    required=True,
    type=click.Path(file_okay=False, exists=True),
    help="A directory whose files may be read and written (repeatable).",
)
@click.option("--token", default=None, help="Request token (default: a random one).")
@click.option(
    "--provider",
    type=click.Choice(["auto", "cpu", "cuda", "tensorrt"]),
    default="auto",
    show_default=True,
    help="onnxruntime execution provider for the models it serves.",
)
@click.option(
    "--info-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write port and token (default ~/.zsdeconvnet/server.json).",
)
@click.option(
    "--concurrent",
    type=click.IntRange(1, 64),
    default=MAX_CONCURRENT,
    show_default=True,
    help="Predictions run at once (more wait): each already uses every core.",
)
@friendly_errors
def serve(port, roots, token, provider, info_file, concurrent):
    """Keep models loaded and answer prediction requests from macros (127.0.0.1 only).

    \b
    Example:
      zsdeconvnet serve --root /data/experiment
      # in ImageJ: run("ZS-DeconvNet Predict", "model=[...] input=[...] route=server");
    """
    from ..fiji_bridge.server import run_server

    run_server(port, list(roots), token, provider, info_file, concurrent)
