"""Benchmarks: speed, image quality, audio and 3D, each runnable alone (`python -m bench speed`)."""
