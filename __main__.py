"""``python -m zsdeconvnet`` runs the command line."""

from zsdeconvnet.runtime.cli import main

main()
