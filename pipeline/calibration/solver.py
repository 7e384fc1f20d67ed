"""StEFCal antenna-based complex gain solver (Salvini & Wijnholds 2014), array kernels.

Convention (CASA's, on Measurement Set data)::

    V_ij = g_i conj(g_j) M_ij

For one solution slot, minimising sum_rows w |V - g_i conj(g_j) M|^2 over g_i with the
other gains held fixed gives (the StEFCal update, Algorithm 1 of the paper)::

    g_i <- sum_j R_ij g_j / sum_j Q_ij |g_j|^2,   R_ij = sum w V_ij conj(M_ij),
                                                   Q_ij = sum w |M_ij|^2

so every row that shares a solution only enters through the per-baseline sums R, Q
(and P = sum w |V|^2 for the residual). The kernels therefore first reduce the data to
dense (slot, n_ant, n_ant) matrices in float64 and then iterate with one batched
matrix-vector product per iteration, over all slots (channels, integrations,
polarizations) at once: no Python loop over slots. Every other iteration the new and
old gains are averaged, as the paper prescribes, which makes the fixed-point iteration
converge in tens of steps.

Arrays are of the backend ``xp`` (NumPy or CuPy); accumulations and convergence tests
are float64 (DESIGN: float64 in the solver, float32 only to apply gains).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.backend import map_blocks

#: An antenna needs at least this many unflagged baselines in a slot to be solved for.
MIN_BASELINES = 3
#: SNR reported for noiseless solutions (a finite stand-in for infinity).
SNR_CAP = 1e9
#: bytes of dense normal matrices per StEFCal batch of slots on the CPU (cache-sized)
SLOT_BATCH_BYTES = 8 << 20


@dataclass(frozen=True, kw_only=True, eq=False)
class NormalEquations:
    """Per-slot sums over the rows sharing a solution, as dense antenna matrices.

    R : (nslot, n_ant, n_ant) complex128, sum w V conj(M), Hermitian (R[j, i] = conj R[i, j]).
    Q : (nslot, n_ant, n_ant) float64, sum w |M|^2, symmetric.
    P : (nslot, n_ant, n_ant) float64, sum w |V|^2, symmetric (for the residual).
    N : (nslot, n_ant, n_ant) float64, number of unflagged samples, symmetric.
    """

    R: Any
    Q: Any
    P: Any
    N: Any


@dataclass(frozen=True, kw_only=True, eq=False)
class StefcalResult:
    """Gains and their quality for every slot.

    gains : (nslot, n_ant) complex128, NaN where flagged; refant phase 0.
    converged : (nslot,) bool; n_iter : iterations run.
    snr : (nslot, n_ant) float64, |g| / sigma_g (NaN where flagged).
    sigma : (nslot,) float64, residual rms per real/imaginary part of one visibility.
    refant : (nslot,) int, antenna whose phase was fixed to 0 in each slot.
    """

    gains: Any
    converged: Any
    n_iter: int
    snr: Any
    sigma: Any
    refant: Any


def baseline_sums(vis, model, weights, *, xp=np, axis: int | tuple[int, ...] = 0):
    """Sum w V conj(M), w |M|^2, w |V|^2 and w > 0 over ``axis`` in float64.

    vis, model : complex (any precision), same shape; weights : float, same shape (0 for
    flagged). Returns (R complex128, Q float64, P float64, N float64) with ``axis``
    removed. Products are formed in the inputs' precision and summed in float64.
    """
    vm = vis * xp.conj(model) * weights
    R = xp.sum(vm, axis=axis, dtype=xp.complex128)
    Q = xp.sum((model.real * model.real + model.imag * model.imag) * weights, axis=axis,
               dtype=xp.float64)
    P = xp.sum((vis.real * vis.real + vis.imag * vis.imag) * weights, axis=axis,
               dtype=xp.float64)
    N = xp.sum(weights > 0, axis=axis, dtype=xp.float64)
    return R, Q, P, N


def dense_normal_equations(R, Q, P, N, ant1, ant2, *, n_ant: int, xp=np) -> NormalEquations:
    """Scatter per-baseline sums into dense Hermitian antenna matrices.

    R, Q, P, N : (nbl, nslot) from :func:`baseline_sums` over rows of *distinct*
    baselines (no pair twice); ant1, ant2 : (nbl,) int in [0, n_ant). Autocorrelations
    (ant1 == ant2) may be among them: the diagonal is zeroed, so they are ignored.
    Returns :class:`NormalEquations` with (nslot, n_ant, n_ant) matrices.
    """
    a1, a2 = xp.asarray(ant1), xp.asarray(ant2)
    nslot = R.shape[1]
    out = {}
    for name, x, cplx in (("R", R, True), ("Q", Q, False), ("P", P, False), ("N", N, False)):
        m = xp.zeros((nslot, n_ant, n_ant), dtype=xp.complex128 if cplx else xp.float64)
        xt = x.T
        m[:, a1, a2] = xt
        m[:, a2, a1] = xp.conj(xt) if cplx else xt
        diag = xp.arange(n_ant)
        m[:, diag, diag] = 0
        out[name] = m
    return NormalEquations(**out)


def stefcal_normal(ne: NormalEquations, *, n_iter: int = 100, tol: float = 1e-8,
                   refant_order=None, min_baselines: int = MIN_BASELINES,
                   xp=np) -> StefcalResult:
    """StEFCal on precomputed normal equations, all slots at once.

    ne : (nslot, n_ant, n_ant) sums. refant_order : (n_ant,) int, antennas in order of
    preference as reference (default: most unflagged samples first, over all slots, so
    that every slot prefers the same reference). Antennas with fewer than
    ``min_baselines`` unflagged baselines in a slot are flagged there (NaN gain), and the
    rule is applied repeatedly since flagging one antenna removes baselines of others.
    """
    R, Q, P, N = ne.R, ne.Q, ne.P, ne.N
    nslot, n_ant = R.shape[0], R.shape[1]
    has = N > 0                                                    # (s, a, a)
    ok = xp.ones((nslot, n_ant), dtype=bool)
    for _ in range(n_ant):
        nbl = xp.sum(has & ok[:, None, :], axis=2)
        new_ok = ok & (nbl >= min_baselines)
        if bool(xp.all(new_ok == ok)):
            break
        ok = new_ok
    # a good start: |g| from the overall amplitude ratio, phase 0
    scale = xp.sqrt(xp.sum(xp.abs(R), axis=(1, 2)) / xp.maximum(xp.sum(Q, axis=(1, 2)), 1e-300))
    g = xp.where(ok, scale[:, None], 0).astype(xp.complex128)
    converged = ~xp.any(ok, axis=1)                                 # empty slots: done
    it = 0
    for it in range(1, n_iter + 1):
        g_old = g
        num = xp.matmul(R, g_old[:, :, None])[:, :, 0]
        den = xp.matmul(Q, (g_old.real ** 2 + g_old.imag ** 2)[:, :, None])[:, :, 0]
        g = xp.where(ok & (den > 0), num / xp.where(den > 0, den, 1.0), 0)
        if it % 2 == 0:
            dg = xp.sqrt(xp.sum(xp.abs(g - g_old) ** 2, axis=1))
            gn = xp.sqrt(xp.sum(xp.abs(g) ** 2, axis=1))
            converged = converged | (dg <= tol * xp.maximum(gn, 1e-300))
            if bool(xp.all(converged)):
                break
            g = xp.where(converged[:, None], g, 0.5 * (g + g_old))
    ok = ok & (xp.abs(g) > 0)
    if refant_order is None:
        refant_order = xp.argsort(-xp.sum(N, axis=(0, 2)), kind="stable")
    order = xp.asarray(refant_order)
    # per slot, the first antenna in order of preference that has a solution there
    pick = xp.argmax(ok[:, order], axis=1)
    refant = order[pick]
    gref = g[xp.arange(nslot), refant]
    rot = xp.where(xp.abs(gref) > 0, xp.conj(gref) / xp.where(xp.abs(gref) > 0,
                                                                  xp.abs(gref), 1.0), 1.0)
    g = g * rot[:, None]
    g[xp.arange(nslot), refant] = xp.abs(gref)      # exactly real, not to round-off
    sigma, snr = _noise(R, Q, P, N, g, ok, xp=xp)
    g = xp.where(ok, g, xp.nan + 0j)
    return StefcalResult(gains=g, converged=converged, n_iter=it, snr=snr, sigma=sigma,
                         refant=refant)


def _noise(R, Q, P, N, g, ok, *, xp):
    """Residual rms per slot and per-antenna SNR from the normal equations.

    The residual sum over live baselines (both antennas solved) is
    sum_ij o_i o_j P_ij - 2 Re(g^H R g) + a^T Q a with a = |g|^2 and g, a zero where
    not solved (o: solved), each a batched matrix-vector product over the dense
    matrices: no (nslot, n_ant, n_ant) temporaries. Each baseline appears twice in the
    dense matrices, hence the halves.
    """
    okf = ok.astype(xp.float64)
    g0 = xp.where(ok, g, 0)
    a2 = g0.real ** 2 + g0.imag ** 2

    def quad(m, x):
        return xp.matmul(m, x[:, :, None])[:, :, 0]

    Qa = quad(Q, a2)                                               # (s, a)
    Rg = quad(R, g0)
    rss = 0.5 * (xp.sum(okf * quad(P, okf), axis=1)
                 - 2 * xp.real(xp.sum(xp.conj(g0) * Rg, axis=1))
                 + xp.sum(a2 * Qa, axis=1))
    nvis = 0.5 * xp.sum(okf * quad(N, okf), axis=1)
    dof = xp.maximum(2 * nvis - 2 * xp.sum(ok, axis=1) + 1, 1.0)
    sigma = xp.sqrt(xp.maximum(rss, 0.0) / dof)                   # per real/imag part
    fisher = xp.where(ok, Qa, 0.0)                                 # (s, a)
    err = sigma[:, None] / xp.sqrt(xp.where(fisher > 0, fisher, xp.nan))
    snr = xp.abs(g) / xp.maximum(err, xp.abs(g) / SNR_CAP)
    return sigma, xp.where(ok, snr, xp.nan)


def stefcal(vis, model, ant1, ant2, *, n_ant: int, weights=None, n_iter: int = 100,
            tol: float = 1e-8, xp=np):
    """Antenna gains for one solution interval, vectorised over trailing slot axes.

    Parameters
    ----------
    vis, model : (nrow, ...) complex
        Observed and model visibilities of the rows sharing a solution (e.g. every
        integration's rows for a bandpass); the trailing axes (channels, polarizations)
        are independent solution slots.
    ant1, ant2 : (nrow,) int
        Antenna indices in [0, n_ant); autocorrelation rows are ignored; a baseline may
        appear in many rows.
    weights : (nrow, ...) float, optional
        0 for flagged samples (default 1 everywhere).
    n_iter, tol : int, float
        Iteration limit and relative change of the gain vector that counts as converged.

    Returns
    -------
    gains : (n_ant, ...) complex128
        Reference antenna (most unflagged data) at phase 0; NaN for antennas with too
        little unflagged data in a slot.
    converged : (...) bool
    n_iter : int
    """
    vis, model = xp.asarray(vis), xp.asarray(model)
    slot_shape = vis.shape[1:]
    w = xp.ones(vis.shape, dtype=xp.float32) if weights is None else xp.asarray(
        weights, dtype=xp.float32)
    a1, a2 = np.asarray(_host(ant1)), np.asarray(_host(ant2))
    cross = a1 != a2
    lo, hi = np.minimum(a1, a2)[cross], np.maximum(a1, a2)[cross]
    rows = np.flatnonzero(cross)
    swap = (a1 > a2)[cross]
    bl, inverse = np.unique(lo * n_ant + hi, return_inverse=True)
    v = vis[xp.asarray(rows)].reshape(rows.size, -1)
    m = model[xp.asarray(rows)].reshape(rows.size, -1)
    ww = w[xp.asarray(rows)].reshape(rows.size, -1)
    # rows given as (j, i) are conjugated to (i, j) so that one baseline sums in one place
    sw = xp.asarray(swap)[:, None]
    v, m = xp.where(sw, xp.conj(v), v), xp.where(sw, xp.conj(m), m)
    per_row = baseline_sums(v[None], m[None], ww[None], xp=xp, axis=0)
    inv = xp.asarray(inverse)
    sums = [_scatter_rows(x, inv, bl.size, xp=xp) for x in per_row]
    ne = dense_normal_equations(*sums, bl // n_ant, bl % n_ant, n_ant=n_ant, xp=xp)
    res = stefcal_normal(ne, n_iter=n_iter, tol=tol, xp=xp)
    gains = xp.moveaxis(res.gains, 0, 1).reshape((n_ant,) + slot_shape)
    return gains, res.converged.reshape(slot_shape), res.n_iter


def _scatter_rows(x, inverse, n: int, *, xp):
    """Sum rows of x (nrow, nslot) that share an index in ``inverse`` into (n, nslot)."""
    # a one-hot matrix product keeps it one array operation on either backend
    onehot = xp.zeros((n, x.shape[0]), dtype=xp.float64)
    onehot[inverse, xp.arange(x.shape[0])] = 1.0
    return onehot @ x


def _host(a) -> np.ndarray:
    return a.get() if hasattr(a, "get") else np.asarray(a)


@dataclass(frozen=True, kw_only=True, eq=False)
class GainSolution:
    """A bandpass or gain solve, on the backend's arrays.

    gains : complex128, (n_ant, nchan, npol) for a bandpass or (ntime, n_ant, npol) for
    gains; NaN where flagged. snr : same shape, float64. converged : bool per slot.
    refant : int, the preferred reference antenna (most unflagged data).
    """

    gains: Any
    snr: Any
    converged: Any
    n_iter: int
    refant: int
    sigma: Any


def solve_slots(sums, ant1, ant2, *, n_ant: int, slots: tuple[int, int], ant_axis: int,
                refant_order, n_iter: int = 100, tol: float = 1e-8,
                xp=np, batch_bytes: int = SLOT_BATCH_BYTES) -> GainSolution:
    """StEFCal over (nbl, n_slot) baseline sums; gains with the antenna axis at ``ant_axis``.

    sums : (R, Q, P, N), each (nbl, n_slot) with n_slot = prod(slots), over distinct cross
    baselines ant1, ant2 (compressed antenna indices); refant_order : (n_ant,) antennas in
    order of preference (the first is the reference).

    On the CPU the slots are solved in batches whose dense matrices fit ``batch_bytes``,
    on every core (a bandpass's 1536 slots at once are 570 MB of fresh matrices that
    every iteration streams through memory; a batch stays in cache); on a GPU in one go.
    """
    nslot = sums[0].shape[1]
    per_slot = 40 * n_ant * n_ant               # complex128 R, float64 Q, P and N
    step = max(1, batch_bytes // per_slot) if xp is np else nslot
    gains = xp.empty((nslot, n_ant), dtype=xp.complex128)
    snr = xp.empty((nslot, n_ant), dtype=xp.float64)
    converged = xp.empty(nslot, dtype=bool)
    sigma = xp.empty(nslot, dtype=xp.float64)

    def one(sl: slice) -> int:
        ne = dense_normal_equations(*(x[:, sl] for x in sums), ant1, ant2, n_ant=n_ant,
                                    xp=xp)
        res = stefcal_normal(ne, n_iter=n_iter, tol=tol, refant_order=refant_order, xp=xp)
        gains[sl], snr[sl], converged[sl], sigma[sl] = (res.gains, res.snr, res.converged,
                                                        res.sigma)
        return res.n_iter

    batches = [slice(s0, min(s0 + step, nslot)) for s0 in range(0, nslot, step)]
    iterations = max(map_blocks(one, batches, xp), default=0)
    shape = (*slots, n_ant)
    return GainSolution(
        gains=xp.moveaxis(gains.reshape(shape), 2, ant_axis),
        snr=xp.moveaxis(snr.reshape(shape), 2, ant_axis),
        converged=converged.reshape(slots), n_iter=iterations,
        refant=int(_host(xp.asarray(refant_order))[0]), sigma=sigma.reshape(slots))
