"""Simulated DSA-110-like correlator output with known truth (``contimg simulate``).

The instrument and the sky it observes are production code in :mod:`pipeline.instrument`;
the simulator adds what only a simulation has:

- :mod:`~pipeline.simulate.gains`: per-antenna bandpass and drift;
- :mod:`~pipeline.simulate.writer`: UVH5 files, written atomically;
- :mod:`~pipeline.simulate.truth`: the truth file (``load_truth``);
- :mod:`~pipeline.simulate.run`: ``SimConfig`` and ``simulate``.
"""

from pipeline.simulate.run import SimConfig, SimResult, SimulateError, simulate
from pipeline.simulate.truth import Truth, load_truth

__all__ = ["SimConfig", "SimResult", "SimulateError", "Truth", "load_truth", "simulate"]
