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


def catalog_frame(path: str | Path | None = None) -> pd.DataFrame:
    """The reference catalog as name, ra_deg, dec_deg, flux_jy, spectral_index (1.4 GHz)."""
    from pipeline.simulate.sky import DEFAULT_CATALOG, load_catalog  # noqa: PLC0415

    sky = load_catalog(path or DEFAULT_CATALOG)
    return pd.DataFrame({"name": list(sky.names), "ra_deg": sky.ra_deg, "dec_deg": sky.dec_deg,
                         "flux_jy": sky.flux_jy, "spectral_index": sky.spectral_index})


def seed_catalog(store: Store, *, now: datetime, path: str | Path | None = None) -> int:
    """Insert the reference catalog unless the store holds it already; returns rows added."""
    if store.catalog_seeded():
        return 0
    n = store.add_catalog_sources(catalog_frame(path), now=now)
    log.info("seeded %d reference-catalog sources from %s", n, path or "data/catalog.csv")
    return n
