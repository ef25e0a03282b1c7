"""The ``zsdeconvnet`` command line: the click group, ``predict`` and ``info``.

Every other command family has its module in ``cli/`` (``train.py``: train, export, adapt;
``physics.py``: psf, check-psf, simulate, evaluate; ``sim.py``; ``fiji.py``: fiji, serve;
``demo.py``),
imported only when its command runs, so ``zsdeconvnet --help`` and ``predict`` start without
torch or scipy installed.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import sys

import click

from .. import __version__
from ..runtime.errors import InputError

#: What the torch commands import, and the install line that brings it
TRAIN = ("torch", "onnx", "onnxscript", "scipy", "skimage", "matplotlib")
#: What the physics commands (psf, simulate, evaluate) import: no torch
PHYSICS = ("scipy", "skimage")
#: (the package is installed from a checkout or a wheel: ``zsdeconvnet`` stands for either)
INSTALL_HINT = {
    TRAIN: "pip install torch==2.13.0 'zsdeconvnet[train]' (from a checkout: '.[train]')",
    PHYSICS: "pip install 'zsdeconvnet[physics]' (from a checkout: '.[physics]')",
}

#: name -> (module:attribute, one-line help, modules it needs beyond the runtime)
COMMANDS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "predict": ("zsdeconvnet.cli.predict:predict", "Restore images with a model file.", ()),
    "info": ("zsdeconvnet.cli.predict:info", "Describe a model file and the runtime.", ()),
    "psf": ("zsdeconvnet.cli.physics:psf", "Generate a PSF from the optics.", PHYSICS),
    "check-psf": (
        "zsdeconvnet.cli.physics:check_psf",
        "Does the PSF fit the image? (passband check).",
        PHYSICS,
    ),
    "simulate": (
        "zsdeconvnet.cli.physics:simulate",
        "Simulate noisy data with PSF and ground truth.",
        PHYSICS,
    ),
    "train": ("zsdeconvnet.cli.train:train", "Zero-shot training on the image itself.", TRAIN),
    "export": ("zsdeconvnet.cli.train:export", "Export a training checkpoint to ONNX.", TRAIN),
    "adapt": (
        "zsdeconvnet.cli.train:adapt",
        "Fine-tune per frame, then restore it (test-time adaptation).",
        TRAIN,
    ),
    "fiji": ("zsdeconvnet.cli.fiji:fiji", "Fiji / ImageJ: install macros, launch.", ()),
    "serve": (
        "zsdeconvnet.cli.fiji:serve",
        "Warm prediction server for macros (127.0.0.1).",
        (),
    ),
    "sim-reconstruct": (
        "zsdeconvnet.cli.sim:sim_reconstruct",
        "Conventional 2D-SIM reconstruction of raw frames.",
        TRAIN,
    ),
    "sim-recorrupt": (
        "zsdeconvnet.cli.sim:sim_recorrupt",
        "Recorrupt raw SIM frames into training pairs.",
        TRAIN,
    ),
    "demo": (
        "zsdeconvnet.cli.demo:demo",
        "The main job on a shipped image: psf, train, export, predict.",
        TRAIN,
    ),
    "evaluate": (
        "zsdeconvnet.cli.physics:evaluate",
        "PSNR/SSIM (paper protocol) and bead FWHM against a reference.",
        PHYSICS,
    ),
}


class LazyGroup(click.Group):
    """A click group that imports a command's module only when the command runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        target, help_text, requires = COMMANDS[name]
        module_name, attr = target.split(":")
        # checked before importing: several commands import their heavy modules only when run
        absent = [m for m in requires if importlib.util.find_spec(m) is None]
        if absent:
            return _missing_extra(name, help_text, absent[0], INSTALL_HINT[requires])
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            missing = (getattr(err, "name", "") or "").split(".")[0]
            if requires and missing in requires:
                return _missing_extra(name, help_text, missing, INSTALL_HINT[requires])
            raise
        return getattr(module, attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _missing_extra(name: str, help_text: str, missing: str, hint: str) -> click.Command:
    message = f"'{name}' needs {missing}, which is not installed; install it with: {hint}"

    @click.command(
        name=name,
        help=f"{help_text}\n\nNot available here: {message}.",
        context_settings={"ignore_unknown_options": True},
    )
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def stub(args: tuple[str, ...]) -> None:
        raise click.ClickException(message)

    return stub


#: Set by the hidden ``--errors-to-stdout`` option: ImageJ's ``exec()`` reads stdout only.
_ERRORS_TO_STDOUT = False


def _report(message: str) -> None:
    click.echo(message, err=not _ERRORS_TO_STDOUT)


def friendly_errors(func):
    """Turn :class:`InputError` into one ``Error: ...`` line and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except InputError as err:
            _report(f"Error: {err}")
            sys.exit(2)
        except OSError as err:  # disk full, permissions, ... while writing
            where = f"'{err.filename}': " if err.filename else ""
            _report(f"Error: {where}{err.strerror or err}; no partial output was kept")
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("Interrupted; no partial output was kept.", err=True)
            sys.exit(130)

    return wrapper


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="zsdeconvnet")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("--errors-to-stdout", is_flag=True, hidden=True)
def main(verbose: int, errors_to_stdout: bool) -> None:
    """ZS-DeconvNet: zero-shot denoising and super-resolution for fluorescence microscopy.

    Train on one noisy image and its PSF, export one ONNX file, restore images anywhere.

    \b
    Examples:
      zsdeconvnet predict model.onnx cell.tif -o cell_sr.tif
      zsdeconvnet info model.onnx
    """
    global _ERRORS_TO_STDOUT
    _ERRORS_TO_STDOUT = errors_to_stdout
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(levelname)s: %(message)s")
    if verbose < 2:  # tifffile logs each defect of a damaged file; we report it in one line
        logging.getLogger("tifffile").setLevel(logging.CRITICAL)


if __name__ == "__main__":  # pragma: no cover
    main()
