"""``python -m zsdeconvnet`` runs the command line."""

from zsdeconvnet.cli.main import main

main()
