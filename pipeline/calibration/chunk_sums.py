"""A calibrator chunk's normal-equation sums, the application and the flux QA in few passes.

The solver (:mod:`pipeline.calibration.solver`) sees the data only through per-baseline
sums (R = sum w V conj(M), Q = sum w |M|^2, P = sum w |V|^2, N = sum w). This module
forms them for a whole chunk arranged (ntime, nbl, nchan, npol), with the model
(ntime, nbl, nchan) shared by both polarizations, in three passes over the big arrays,
each in blocks of baselines small enough for the cache, and no chunk-sized temporary:

1. :func:`bandpass_pass`: the bandpass sums over time, and the per-integration sums
   over channels of w |V|^2 and w (for the gains' residual).
2. :func:`gain_sums`: the per-integration gain sums against B_i conj(B_j) M, as channel
   contractions (einsum or a matrix product, float64 accumulation).
3. :func:`apply_pass`: CORRECTED = V h with h = 1 / (g_i conj g_j) (0 and flagged where
   a solution is), in V's own memory if the caller wishes, and the flux QA
   sum_t w C conj(M) from the same blocks: no copy of the model.

V conj(M) is formed again in each pass rather than kept: a chunk-sized array costs more
in first-touch page faults (1-5 s for 1.4 GB, measured on the 2-core VM) than the
multiplication (0.1 s).

Arrays are the backend's (``xp``: NumPy or CuPy); sums are float64/complex128 (DESIGN:
float64 for the solver's accumulations), products of the big arrays complex64/float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.backend import map_blocks


@dataclass(frozen=True, kw_only=True, eq=False)
class BandpassPass:
    """What :func:`bandpass_pass` sums.

    R, Q, P, N : (nbl, nchan, npol) bandpass sums over time (complex128, float64 x 3).
    Pt, Nt : (ntime, nbl, npol) float64, sums over channels of w |V|^2 and w.
    any_flags : (ntime,) bool host array, whether an integration has a flagged sample.
    """

    R: Any
    Q: Any
    P: Any
    N: Any
    Pt: Any
    Nt: Any
    any_flags: np.ndarray


def _vis_times_conj_model(Vk, Mk, out, xp):
    """Write Vk conj(Mk) into out, per polarization: (nb, nchan, npol) and (nb, nchan)."""
    mc = xp.conj(Mk)
    # per polarization: broadcasting M over a length-2 innermost axis runs NumPy's
    # inner loop two elements at a time (3x slower, measured)
    for j in range(Vk.shape[-1]):
        xp.multiply(Vk[:, :, j], mc, out=out[:, :, j])
    return out


#: baselines per block: a block's complex128 accumulator (nchan x npol) stays ~1 MB, in
#: cache across the integrations (measured: 2-3x faster than whole-integration slabs,
#: whose float64 accumulators go to memory and back once per integration)
BLOCK_BYTES = 1 << 20


def baseline_blocks(nbl: int, nchan: int, npol: int, block_bytes: int = BLOCK_BYTES):
    """Slices of at most ``block_bytes / (16 nchan npol)`` baselines covering ``nbl``."""
    step = max(1, block_bytes // (16 * nchan * npol))
    return [slice(b0, min(b0 + step, nbl)) for b0 in range(0, nbl, step)]


def bandpass_pass(V, M, F, *, xp=np, block_bytes: int = BLOCK_BYTES) -> BandpassPass:
    """One pass over a chunk: the sums a bandpass and the gains' noise need.

    V : (ntime, nbl, nchan, npol) complex; M : (ntime, nbl, nchan) complex, the model of
    every polarization; F : (ntime, nbl, nchan, npol) bool, True = flagged.
    """
    ntime, nbl, nchan, npol = V.shape
    R = xp.empty((nbl, nchan, npol), dtype=xp.complex128)
    Q = xp.empty((nbl, nchan, npol), dtype=xp.float64)
    P = xp.empty((nbl, nchan, npol), dtype=xp.float64)
    N = xp.empty((nbl, nchan, npol), dtype=xp.float64)
    Pt = xp.empty((ntime, nbl, npol), dtype=xp.float64)
    Nt = xp.empty((ntime, nbl, npol), dtype=xp.float64)
    any_flags = np.zeros(ntime, dtype=bool)

    def one(blk: slice) -> None:
        nb = blk.stop - blk.start
        r = xp.zeros((nb, nchan, npol), dtype=xp.complex128)
        q = xp.zeros((nb, nchan), dtype=xp.float64)          # unflagged: one per pol
        qf = xp.zeros((nb, nchan, npol), dtype=xp.float64)   # what flags take away
        p = xp.zeros((nb, nchan, npol), dtype=xp.float64)
        nf = xp.zeros((nb, nchan, npol), dtype=xp.float64)
        ones = xp.ones((1, 1, nchan), dtype=xp.float64)
        v2 = xp.empty((nb, nchan, npol), dtype=xp.float64)
        y = xp.empty((nb, nchan, npol), dtype=xp.complex64)
        for k in range(ntime):
            Vk, Fk = V[k, blk], F[k, blk]
            Mk = xp.asarray(M[k, blk])
            _vis_times_conj_model(Vk, Mk, y, xp)
            m2 = xp.abs(Mk)
            m2 *= m2
            a = xp.abs(Vk)
            xp.multiply(a, a, out=v2)                          # |V|^2 in float64
            q += m2
            if bool(xp.any(Fk)):
                any_flags[k] = True
                xp.copyto(y, xp.complex64(0), where=Fk)
                xp.copyto(v2, 0.0, where=Fk)
                qf += xp.where(Fk, m2[:, :, None], xp.float32(0))
                nf += Fk
                Nt[k, blk] = nchan - xp.sum(Fk, axis=1, dtype=xp.float64)
            else:
                Nt[k, blk] = float(nchan)
            r += y
            p += v2
            Pt[k, blk] = xp.matmul(ones, v2)[:, 0, :]        # sum over channels
        R[blk] = r
        Q[blk] = q[:, :, None] - qf
        P[blk] = p
        N[blk] = ntime - nf

    map_blocks(one, baseline_blocks(nbl, nchan, npol, block_bytes), xp)
    return BandpassPass(R=R, Q=Q, P=P, N=N, Pt=Pt, Nt=Nt, any_flags=any_flags)


def gain_sums(bp: BandpassPass, V, M, F, bandpass, ant1, ant2, *, xp=np,
              block_bytes: int = BLOCK_BYTES):
    """Per-integration sums (R, Q, P, N), each (ntime, nbl, npol), against B_i conj(B_j) M.

    bp : the chunk's :class:`BandpassPass`; V, M, F : as given to it; bandpass :
    (n_ant, nchan, npol) complex, NaN = flagged; ant1, ant2 : (nbl,) int. Solving V
    against bb = B_i conj(B_j) M is solving V / bb against M without a divided copy of
    the data; bb is formed a block of baselines at a time (for the whole chunk it would
    be a fresh 117 MB array).
    """
    b = xp.asarray(bandpass)
    b = xp.where(xp.isfinite(b), b, 0).astype(xp.complex128)
    i1, i2 = xp.asarray(ant1), xp.asarray(ant2)
    ntime, nbl, nchan, npol = V.shape
    R = xp.empty((ntime, nbl, npol), dtype=xp.complex128)
    Q = xp.empty((ntime, nbl, npol), dtype=xp.float64)
    P = bp.Pt.copy()
    N = xp.empty((ntime, nbl, npol), dtype=xp.float64)

    def one(blk: slice) -> None:
        bbk = b[i1[blk]] * xp.conj(b[i2[blk]])                          # (nb, c, p)
        bbc = xp.conj(bbk)
        u = bbk.real * bbk.real + bbk.imag * bbk.imag                   # |bb|^2
        mb = bbk != 0
        holes = ~mb                                                     # flagged bandpass
        any_holes = bool(xp.any(holes))
        mb_count = xp.sum(mb, axis=1, dtype=xp.float64)
        y = xp.empty(bbk.shape, dtype=xp.complex64)
        for k in range(ntime):
            Mk = xp.asarray(M[k, blk])
            _vis_times_conj_model(V[k, blk], Mk, y, xp)
            flagged = bp.any_flags[k] and bool(xp.any(F[k, blk]))
            if flagged:
                xp.copyto(y, xp.complex64(0), where=F[k, blk])
            R[k, blk] = xp.einsum("bcp,bcp->bp", y, bbc)
            m2 = xp.abs(Mk)
            m2 *= m2
            if flagged:
                w = ~xp.asarray(F[k, blk])
                Q[k, blk] = xp.einsum("bcp,bcp->bp", xp.where(w, m2[:, :, None], 0), u)
                N[k, blk] = xp.sum(w & mb, axis=1, dtype=xp.float64)
            else:
                Q[k, blk] = xp.matmul(m2[:, None, :].astype(xp.float64), u)[:, 0, :]
                N[k, blk] = mb_count
            if any_holes:
                # samples whose bandpass is flagged leave the residual too
                v2 = xp.abs(xp.asarray(V[k, blk]))
                v2 *= v2
                v2 = xp.where(holes & ~xp.asarray(F[k, blk]), v2, 0)
                P[k, blk] -= xp.sum(v2, axis=1, dtype=xp.float64)

    map_blocks(one, baseline_blocks(nbl, nchan, npol, block_bytes), xp)
    return R, Q, P, N


@dataclass(frozen=True, kw_only=True, eq=False)
class ApplyPass:
    """What :func:`apply_pass` measured.

    flux_num : (nbl, nchan, npol) complex128, sum_t w C conj(M).
    flux_den : (nbl, nchan, npol) float64, sum_t w |M|^2 over the samples kept.
    """

    flux_num: Any
    flux_den: Any


def inverse_products(g1, g2, *, xp=np):
    """(1 / (g1 conj g2) as complex64 with 0 where bad, bad bool); bad = NaN, inf or 0."""
    gg = (xp.asarray(g1).astype(xp.complex64, copy=False)
          * xp.conj(xp.asarray(g2).astype(xp.complex64, copy=False)))
    bad = ~xp.isfinite(gg) | (gg == 0)
    h = xp.complex64(1) / xp.where(bad, xp.complex64(1), gg)
    return xp.where(bad, xp.complex64(0), h), bad


def apply_pass(V, M, F, bp: BandpassPass, hb, hg, *, out, out_flags, xp=np,
               block_bytes: int = BLOCK_BYTES) -> ApplyPass:
    """CORRECTED = V hb hg per integration into ``out``; flags OR-ed into ``out_flags``.

    V, F : (ntime, nbl, nchan, npol) and M (ntime, nbl, nchan) as given to
    :func:`bandpass_pass`; hb : (nbl, nchan, npol) complex64 inverse bandpass products,
    hg : (ntime, nbl, npol) complex64 inverse gain products, both 0 where bad (from
    :func:`inverse_products`); out : (ntime, nbl, nchan, npol) complex64, written in
    place, and may be ``V`` itself (the corrected data then take the data's memory);
    out_flags : bool, same shape, OR-ed in place, and may be ``F`` itself (each block is
    read before it is written). Returns the flux-QA sums over the samples left unflagged.
    """
    ntime, nbl, nchan, npol = V.shape
    num = xp.empty((nbl, nchan, npol), dtype=xp.complex128)
    den = bp.Q.copy()

    def one(blk: slice) -> None:
        hbk = hb[blk]
        bad_b = hbk == 0
        any_bad_b = bool(xp.any(bad_b))
        acc = xp.zeros(hbk.shape, dtype=xp.complex128)
        h = xp.empty(hbk.shape, dtype=xp.complex64)
        y = xp.empty(hbk.shape, dtype=xp.complex64)
        for k in range(ntime):
            Mk = xp.asarray(M[k, blk])
            flagged = bp.any_flags[k] and bool(xp.any(F[k, blk]))
            bad_g = hg[k, blk] == 0
            if bool(xp.any(bad_g)):
                m2 = xp.abs(Mk)
                m2 *= m2
                lost = xp.broadcast_to(bad_g[:, None, :], hbk.shape) & ~bad_b
                if flagged:
                    lost = lost & ~xp.asarray(F[k, blk])
                den[blk] -= xp.where(lost, m2[:, :, None], 0)
                out_flags[k, blk] |= bad_g[:, None, :]
            # h = hb hg, per polarization (see _vis_times_conj_model)
            for j in range(npol):
                xp.multiply(hbk[:, :, j], hg[k, blk, j][:, None], out=h[:, :, j])
            ck = out[k, blk]
            xp.multiply(h, V[k, blk], out=ck)
            # sum_t w C conj(M): C is 0 where a solution is bad; old flags are zeroed
            _vis_times_conj_model(ck, Mk, y, xp)
            if flagged:
                xp.copyto(y, xp.complex64(0), where=F[k, blk])
            acc += y
            if any_bad_b:
                out_flags[k, blk] |= bad_b
        num[blk] = acc
        if any_bad_b:
            den[blk] = xp.where(bad_b, 0.0, den[blk])

    map_blocks(one, baseline_blocks(nbl, nchan, npol, block_bytes), xp)
    return ApplyPass(flux_num=num, flux_den=den)


def flux_ratio_from(ap: ApplyPass, cross, *, xp=np) -> float:
    """Median over cross baselines, channels and pols of |sum C conj M| / sum |M|^2."""
    num = xp.abs(ap.flux_num[xp.asarray(cross)])
    den = ap.flux_den[xp.asarray(cross)]
    good = den > 0
    if not bool(xp.any(good)):
        return float("nan")
    return float(xp.median(num[good] / den[good]))
