"""Simulated DSA-110-like correlator output with known truth (``contimg simulate``).

- :mod:`~pipeline.simulate.instrument`: site, layout (``load_layout``), frequencies;
- :mod:`~pipeline.simulate.sky`: catalog (``load_catalog``), calibrators, beam, geometry;
- :mod:`~pipeline.simulate.gains`: per-antenna bandpass and drift;
- :mod:`~pipeline.simulate.writer`: UVH5 files, written atomically;
- :mod:`~pipeline.simulate.truth`: the truth file (``load_truth``);
- :mod:`~pipeline.simulate.run`: ``SimConfig`` and ``simulate``.
"""

from pipeline.simulate.instrument import Layout, load_layout
from pipeline.simulate.run import SimConfig, SimResult, SimulateError, simulate
from pipeline.simulate.sky import Sky, load_calibrators, load_catalog
from pipeline.simulate.truth import Truth, load_truth

__all__ = ["Layout", "SimConfig", "SimResult", "SimulateError", "Sky", "Truth",
           "load_calibrators", "load_catalog", "load_layout", "load_truth", "simulate"]
