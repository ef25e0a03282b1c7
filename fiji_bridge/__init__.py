"""Fiji / ImageJ bridge: the model stays outside Java, Fiji calls the zsdeconvnet runtime."""

#: Predictions the server runs at once; more requests wait their turn. Each prediction already
#: uses every core (onnxruntime's threads), so running more at once adds no speed, only memory:
#: 8 at a time grew the server to 1.8 GB in the soak of docs/RELIABILITY.md.
MAX_CONCURRENT = 2
