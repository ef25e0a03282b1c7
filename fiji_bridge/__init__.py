"""Fiji / ImageJ bridge: the model stays outside Java, Fiji calls the zsdeconvnet runtime."""
