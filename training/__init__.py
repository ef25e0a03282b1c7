"""Zero-shot training of ZS-DeconvNet (PyTorch)."""
