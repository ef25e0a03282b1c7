"""Optics and images without torch: PSFs, simulators, metrics, Richardson-Lucy, SIM."""
