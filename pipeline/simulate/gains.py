"""Per-antenna complex gains: a smooth bandpass times a slow drift, seeded and recomputable.

    g[a, p](nu, t) = amp0 (1 + sum_k r_k sin(2 pi nu / P_k + psi_k)) (1 + da (t - t_ref))
                     exp(i (phi0 + 2 pi (nu - nu_ref) tau + dphi (t - t_ref)))

with t in hours. Visibilities are corrupted as ``V_obs[a1, a2] = g[a1] conj(g[a2]) V``.
The parameters (not the gains) go to the truth file; :meth:`GainModel.evaluate`
recomputes the gains exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

_ARRAYS = ("amp0", "ripple_amp", "ripple_period_hz", "ripple_phase", "phase0", "delay_s",
           "amp_rate_per_h", "phase_rate_rad_per_h")


@dataclass(frozen=True, kw_only=True, eq=False)
class GainModel:
    """Gain parameters, each (nant, npol) or (nant, npol, nripple) float64."""

    amp0: np.ndarray
    ripple_amp: np.ndarray
    ripple_period_hz: np.ndarray
    ripple_phase: np.ndarray
    phase0: np.ndarray
    delay_s: np.ndarray
    amp_rate_per_h: np.ndarray
    phase_rate_rad_per_h: np.ndarray
    t_ref_jd: float
    nu_ref_hz: float = 1.405e9

    def __post_init__(self):
        shape = np.shape(self.amp0)
        if len(shape) != 2:
            raise ValueError(f"gains: amp0 must be (nant, npol), got {shape}")
        for name in _ARRAYS:
            if np.shape(getattr(self, name))[:2] != shape:
                raise ValueError(f"gains: {name} has shape {np.shape(getattr(self, name))}, "
                                 f"expected {shape}[...]")

    @property
    def n_ant(self) -> int:
        """Number of antennas."""
        return int(np.shape(self.amp0)[0])

    @classmethod
    def unit(cls, n_ant: int, *, n_pol: int = 2, t_ref_jd: float = 0.0) -> GainModel:
        """Gains of exactly 1 everywhere."""
        z = np.zeros((n_ant, n_pol))
        return cls(amp0=np.ones((n_ant, n_pol)), ripple_amp=np.zeros((n_ant, n_pol, 1)),
                   ripple_period_hz=np.ones((n_ant, n_pol, 1)),
                   ripple_phase=np.zeros((n_ant, n_pol, 1)), phase0=z, delay_s=z,
                   amp_rate_per_h=z, phase_rate_rad_per_h=z, t_ref_jd=t_ref_jd)

    @classmethod
    def draw(cls, rng: np.random.Generator, n_ant: int, *, t_ref_jd: float,
             n_pol: int = 2) -> GainModel:
        """Random gains: 5-10 % bandpass ripple, ~5 ns delays, 1-2 %/h and 5-10 deg/h drifts."""
        shape = (n_ant, n_pol)
        sign = lambda: rng.choice([-1.0, 1.0], size=shape)  # noqa: E731
        return cls(
            amp0=rng.normal(1.0, 0.08, shape).clip(0.6, 1.4),
            # two ripples of 2.5-5 % each: 5-10 % peak to peak over the band
            ripple_amp=rng.uniform(0.025, 0.05, shape + (2,)),
            ripple_period_hz=rng.uniform(15e6, 90e6, shape + (2,)),
            ripple_phase=rng.uniform(0, 2 * np.pi, shape + (2,)),
            phase0=rng.uniform(-np.pi, np.pi, shape),
            delay_s=rng.normal(0.0, 5e-9, shape),
            amp_rate_per_h=sign() * rng.uniform(0.01, 0.02, shape),
            phase_rate_rad_per_h=sign() * np.radians(rng.uniform(5.0, 10.0, shape)),
            t_ref_jd=t_ref_jd)

    def evaluate(self, times_jd, freqs_hz) -> np.ndarray:
        """(nant, ntime, nchan, npol) complex128 gains at ``times_jd`` and ``freqs_hz``."""
        t = (np.atleast_1d(np.asarray(times_jd, float)) - self.t_ref_jd) * 24.0
        nu = np.atleast_1d(np.asarray(freqs_hz, float))
        ripple = 1.0 + np.einsum("apk,apkc->apc", self.ripple_amp, np.sin(
            2 * np.pi * nu[None, None, None, :] / self.ripple_period_hz[..., None]
            + self.ripple_phase[..., None]))                                 # (a, p, c)
        band = self.amp0[..., None] * ripple * np.exp(1j * (
            self.phase0[..., None]
            + 2 * np.pi * (nu[None, None, :] - self.nu_ref_hz) * self.delay_s[..., None]))
        drift = (1.0 + self.amp_rate_per_h[:, :, None] * t[None, None, :]) * np.exp(
            1j * self.phase_rate_rad_per_h[:, :, None] * t[None, None, :])   # (a, p, t)
        g = band[:, :, None, :] * drift[:, :, :, None]                      # (a, p, t, c)
        return np.transpose(g, (0, 2, 3, 1))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready parameters."""
        out: dict[str, Any] = {name: np.asarray(getattr(self, name)).tolist() for name in _ARRAYS}
        out.update(t_ref_jd=self.t_ref_jd, nu_ref_hz=self.nu_ref_hz)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GainModel:
        """Inverse of :meth:`to_dict`."""
        return cls(**{name: np.asarray(d[name], dtype=float) for name in _ARRAYS},
                   t_ref_jd=float(d["t_ref_jd"]), nu_ref_hz=float(d["nu_ref_hz"]))
