"""The ``zsdeconvnet`` command: one click group, one module per command family."""
