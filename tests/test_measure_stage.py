"""The measure stage through the real runner and store, on FITS images at catalog positions."""

from __future__ import annotations

import logging
from datetime import timedelta

import numpy as np
import pytest
from astropy.time import Time
from conftest import T0
from photometry_factory import FakeField, sky_model, write_image

from pipeline.jobs.contract import StageContext, TaskContext
from pipeline.jobs.default_stages import default_registry
from pipeline.jobs.runner import Runner, StageRegistry
from pipeline.photometry.catalog_seed import catalog_frame
from pipeline.photometry.stage import (
    MeasureInputError,
    iau_name,
    measure_stage,
    prepare_measure,
    record_measure,
    resort_photometry_task,
)

# 1.1° of sky at Dec 33° with a 60" × 50" beam: a few dozen catalog sources.
FIELD = FakeField(npix=200, cell_arcsec=20.0, bmaj_arcsec=60.0, bmin_arcsec=50.0,
                  bpa_deg=10.0, ra_deg=150.0, dec_deg=33.0)
SIGMA = 0.5e-3
MJD0 = Time(T0).mjd


def measure_only() -> StageRegistry:
    """The shipped measure stage with its hooks, and nothing else."""
    shipped = default_registry()
    registry = StageRegistry()
    registry.register_stage("measure", shipped.stages["measure"],
                            prepare=shipped.prepares["measure"],
                            record=shipped.records["measure"])
    return registry


@pytest.fixture(scope="module")
def catalog_in_field():
    cat = catalog_frame()
    x, y = FIELD.wcs().all_world2pix(cat.ra_deg.to_numpy(), cat.dec_deg.to_numpy(), 0)
    inside = (x > -0.5) & (x < FIELD.npix - 0.5) & (y > -0.5) & (y < FIELD.npix - 0.5)
    return cat[inside].reset_index(drop=True)


def _register(store, home, n: int, catalog, *, qa_passed=True, transient_at=None,
              path_override=None) -> list[str]:
    """``n`` imaged observations, each with an image of the catalog sources in the field."""
    ids = []
    for k in range(n):
        obs_id = (T0 + timedelta(minutes=5 * k)).isoformat()
        mjd = MJD0 + 5 * k / 1440
        extra = None
        if transient_at is not None and k == n - 1:
            extra = sky_model(FIELD, [transient_at[0]], [transient_at[1]], [30 * SIGMA])
        files = write_image(home.images / f"img{k}.fits", FIELD, catalog.ra_deg.to_numpy(),
                            catalog.dec_deg.to_numpy(), catalog.flux_jy.to_numpy(),
                            sigma=SIGMA, seed=k, extra=extra)
        store.add_observation(obs_id=obs_id, start_utc=T0 + timedelta(minutes=5 * k),
                              mid_mjd=mjd, dec_deg=FIELD.dec_deg, n_subbands=16, now=T0,
                              state="imaged")
        store.add_image(observation_id=obs_id, path=str(path_override or files["path"]),
                        mid_mjd=mjd, now=T0, pbcor_path=str(files["pbcor_path"]),
                        residual_path=str(files["residual_path"]), ra_deg=FIELD.ra_deg,
                        dec_deg=FIELD.dec_deg, npix=FIELD.npix,
                        cell_arcsec=FIELD.cell_arcsec, qa_passed=qa_passed,
                        qa_reason=None if qa_passed else "rms 5x theoretical")
        ids.append(obs_id)
    return ids


def _free_spot(catalog) -> tuple[float, float]:
    x, y = FIELD.wcs().all_world2pix(catalog.ra_deg.to_numpy(), catalog.dec_deg.to_numpy(), 0)
    for gy in range(30, FIELD.npix - 30, 5):
        for gx in range(30, FIELD.npix - 30, 5):
            if np.min(np.hypot(x - gx, y - gy)) > 10:
                ra, dec = FIELD.wcs().all_pix2world([gx + 0.3], [gy - 0.2], 0)
                return float(ra[0]), float(dec[0])
    raise AssertionError("no free spot")


def test_measure_takes_imaged_to_complete_with_lightcurves(store, home, clock,
                                                          catalog_in_field):
    assert len(catalog_in_field) >= 15
    transient = _free_spot(catalog_in_field)
    obs = _register(store, home, 3, catalog_in_field, transient_at=transient)
    outcomes = Runner(store, home, measure_only(), clock=clock).run_once()
    assert outcomes == {"done": 3}
    assert all(store.observation(o).state == "complete" for o in obs)

    phot = store._df("SELECT p.*, s.name, s.catalog_flux_jy, s.origin FROM photometry p "
                     "JOIN sources s ON s.id = p.source_id")
    forced = phot[phot.forced]
    # Every catalog source in the image was measured in every image, once.
    assert set(forced.name) == set(catalog_in_field.name)
    assert len(forced) == 3 * len(catalog_in_field)
    pull = (forced.flux_jy - forced.catalog_flux_jy) / forced.flux_err_jy
    assert np.all(np.abs(pull) < 5), pull.abs().max()
    assert forced.groupby("image_id").mjd.nunique().eq(1).all()

    # The transient is one new detected source with its unforced row and an alert.
    detected = phot[phot.origin == "detected"]
    assert len(detected) == 1 and not detected.forced.iloc[0]
    assert abs(detected.flux_jy.iloc[0] - 30 * SIGMA) < 5 * detected.flux_err_jy.iloc[0]
    src = store._df("SELECT * FROM sources WHERE origin = 'detected'").iloc[0]
    assert abs(src.ra_deg - transient[0]) * np.cos(np.radians(33)) * 3600 < 10
    assert abs(src.dec_deg - transient[1]) * 3600 < 10
    assert (store.recent_alerts().kind == "new source").sum() == 1

    var = store._df("SELECT v.* FROM variability v JOIN sources s ON s.id = v.source_id "
                    "WHERE s.origin = 'catalog'")
    assert len(var) == len(catalog_in_field) and (var.n_meas == 3).all()
    assert not var.is_variable.any()
    assert store._df("SELECT count(*) AS n FROM photometry_runs").n[0] == 3
    # The nightly task re-sorts the three images' rows by source, once.
    ctx = TaskContext(store=store, home=home, now=clock())
    assert resort_photometry_task(ctx) == len(phot)
    assert resort_photometry_task(ctx) == 0


def test_remeasuring_through_the_stage_replaces_rows(store, home, clock, catalog_in_field):
    (obs_id,) = _register(store, home, 1, catalog_in_field)
    Runner(store, home, measure_only(), clock=clock).run_once()
    before = store._df("SELECT * FROM photometry ORDER BY source_id")
    obs = store.observation(obs_id)
    inputs = prepare_measure(store, obs, clock())
    ctx = StageContext(observation=obs, home=home, attempt=2, progress=lambda f: None,
                       inputs=inputs)
    record_measure(store, obs, measure_stage(ctx), clock())
    after = store._df("SELECT * FROM photometry ORDER BY source_id")
    assert len(after) == len(before) == len(catalog_in_field)
    np.testing.assert_allclose(after.flux_jy, before.flux_jy)


def test_image_that_failed_qa_is_not_measured(store, home, clock, catalog_in_field, caplog):
    (obs_id,) = _register(store, home, 1, catalog_in_field, qa_passed=False)
    with caplog.at_level(logging.INFO, logger="pipeline.photometry.stage"):
        assert Runner(store, home, measure_only(), clock=clock).run_once() == {"done": 1}
    assert store.observation(obs_id).state == "complete"
    assert store._df("SELECT count(*) AS n FROM photometry").n[0] == 0
    assert "failed QA (rms 5x theoretical)" in caplog.text


def test_bad_fits_fails_the_job_with_an_error_naming_the_file(store, home, clock,
                                                             catalog_in_field):
    bad = home.images / "broken.fits"
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_bytes(b"SIMPLE  =                    T" + b"\0" * 100)
    (obs_id,) = _register(store, home, 1, catalog_in_field, path_override=bad)
    outcomes = Runner(store, home, measure_only(), clock=clock).run_once()
    assert "done" not in outcomes
    error = store.observation(obs_id).error
    assert f"image {bad}: not a readable FITS file" in error
    assert store._df("SELECT count(*) AS n FROM photometry").n[0] == 0


def test_observation_without_an_image_is_an_error(store, home, clock):
    store.add_observation(obs_id="lonely", start_utc=T0, mid_mjd=MJD0, dec_deg=33.0,
                          n_subbands=16, now=T0, state="imaged")
    with pytest.raises(MeasureInputError, match="lonely: has no registered image"):
        prepare_measure(store, store.observation("lonely"), clock())


@pytest.mark.parametrize(("ra", "dec", "name"), [
    (150.0, 33.0, "CTG J100000.0+330000"),
    (0.0, -5.5, "CTG J000000.0-053000"),
    (359.99999, 12.3456, "CTG J000000.0+122044"),
])
def test_iau_names(ra, dec, name):
    assert iau_name(ra, dec) == name
