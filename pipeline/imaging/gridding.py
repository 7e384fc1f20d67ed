"""Visibilities ↔ image, one interface for both backends.

The CPU path is ducc0's wgridder; the GPU path (CuPy) must give the same numbers. Both
follow ducc0's conventions: ``vis2dirty`` is the adjoint of ``dirty2vis``, images are
(npix, npix) with axis 0 along l (east-west) and axis 1 along m, pixel (npix/2, npix/2)
at the phase centre, and nothing is normalised (divide by the sum of weights yourself).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.backend import Backend, cpu_threads


def vis2dirty(*, uvw: Any, freq: Any, vis: Any, wgt: Any, npix: int, pixsize_rad: float,
              do_wgridding: bool, backend: Backend, epsilon: float = 1e-5) -> Any:
    """Weighted visibilities → unnormalised dirty image.

    uvw (nrow, 3) float64 metres; freq (nchan,) float64 Hz; vis (nrow, nchan) complex64;
    wgt (nrow, nchan) float32, 0 where flagged. Returns (npix, npix) float32 of the backend.
    """
    if backend.name == "cpu":
        return _ducc().vis2dirty(
            uvw=np.ascontiguousarray(uvw, np.float64), freq=np.asarray(freq, np.float64),
            vis=np.ascontiguousarray(vis, np.complex64), wgt=np.ascontiguousarray(wgt, np.float32),
            npix_x=npix, npix_y=npix, pixsize_x=pixsize_rad, pixsize_y=pixsize_rad,
            epsilon=max(epsilon, 1e-5), do_wgridding=do_wgridding, nthreads=cpu_threads())
    from pipeline.imaging import gpu_gridding
    return gpu_gridding.vis2dirty(uvw=uvw, freq=freq, vis=vis, wgt=wgt, npix=npix,
                                  pixsize_rad=pixsize_rad, do_wgridding=do_wgridding,
                                  backend=backend, epsilon=epsilon)


def dirty2vis(*, uvw: Any, freq: Any, dirty: Any, wgt: Any | None, pixsize_rad: float,
              do_wgridding: bool, backend: Backend, epsilon: float = 1e-5,
              out: Any | None = None) -> Any:
    """Image (npix, npix) float32 → model visibilities (nrow, nchan) complex64, the adjoint.

    ``out``: a C-contiguous (nrow, nchan) complex64 array the CPU path writes into and
    returns (no fresh 0.7 GB per major cycle on a full-size chunk); the GPU path ignores it.
    """
    if backend.name == "cpu":
        return _ducc().dirty2vis(vis=out,
            uvw=np.ascontiguousarray(uvw, np.float64), freq=np.asarray(freq, np.float64),
            dirty=np.ascontiguousarray(dirty, np.float32),
            wgt=None if wgt is None else np.ascontiguousarray(wgt, np.float32),
            pixsize_x=pixsize_rad, pixsize_y=pixsize_rad, epsilon=max(epsilon, 1e-5),
            do_wgridding=do_wgridding, nthreads=cpu_threads())
    from pipeline.imaging import gpu_gridding
    return gpu_gridding.dirty2vis(uvw=uvw, freq=freq, dirty=dirty, wgt=wgt,
                                  pixsize_rad=pixsize_rad, do_wgridding=do_wgridding,
                                  backend=backend, epsilon=epsilon)


def _ducc() -> Any:
    import ducc0.wgridder.experimental as wgridder
    return wgridder
