"""Photometry: forced fits at catalog positions, blind detection, variability metrics."""
