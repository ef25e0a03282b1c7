"""zsdeconvnet: zero-shot deconvolution networks (ZS-DeconvNet) for fluorescence microscopy.

Subpackages
-----------
runtime
    Inference with an exported ONNX model: numpy + onnxruntime + tifffile only.
export
    PyTorch checkpoint to a self-describing ONNX model file.
training
    Zero-shot training from one noisy image and its PSF (needs the ``train`` extra).
fiji_bridge
    Fiji / ImageJ integration.
"""

__version__ = "0.1.0"
