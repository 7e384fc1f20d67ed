"""The DuckDB store: the only code that opens the database file.

- :mod:`~pipeline.store.core`: ``Store`` (connection, migrations, observations, jobs,
  alerts, caltables), with the query mixins below;
- :mod:`~pipeline.store.images`, :mod:`~pipeline.store.sources`,
  :mod:`~pipeline.store.photometry`: images, the source catalog and its filters,
  photometry rows and variability;
- :mod:`~pipeline.store.image_files`: reading the FITS products the store registered.
"""

from pipeline.store.core import (
    MIGRATIONS_DIR,
    Claim,
    Histogram,
    Observation,
    Store,
    find_migrations,
)

__all__ = ["MIGRATIONS_DIR", "Claim", "Histogram", "Observation", "Store", "find_migrations"]
