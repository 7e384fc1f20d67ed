"""Seeding the reference catalog into the store's ``sources`` table, once per home."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from pipeline.store import Store

log = logging.getLogger(__name__)


def catalog_frame(path: str | Path | None = None, *,
                  calibrators: bool = True) -> pd.DataFrame:
    """Reference sources as name, ra_deg, dec_deg, flux_jy, spectral_index (1.4 GHz).

    The catalog plus, with ``calibrators``, the flux calibrators (data/calibrators.csv):
    they are not in the catalog, and a 16 Jy calibrator in the field that is not a known
    source would be a "new source" at every transit.
    """
    from pipeline.instrument.sky import (  # noqa: PLC0415
        DEFAULT_CATALOG,
        load_calibrators,
        load_catalog,
    )

    skies = [load_catalog(path or DEFAULT_CATALOG)]
    if calibrators:
        skies.append(load_calibrators())
    return pd.concat([pd.DataFrame({"name": list(sky.names), "ra_deg": sky.ra_deg,
                                    "dec_deg": sky.dec_deg, "flux_jy": sky.flux_jy,
                                    "spectral_index": sky.spectral_index})
                      for sky in skies], ignore_index=True)


def seed_catalog(store: Store, *, now: datetime, path: str | Path | None = None) -> int:
    """Insert the reference catalog unless the store holds it already; returns rows added.

    Safe to call from any number of workers at once: the check only spares reading the
    catalog once it is in, and the insert itself adds each name once (one transaction
    backed by the unique index on ``sources.name``), so the loser of a race adds none.
    """
    if store.catalog_seeded():
        return 0
    n = store.add_catalog_sources(catalog_frame(path), now=now)
    log.info("seeded %d reference-catalog sources from %s", n, path or "data/catalog.csv")
    return n
