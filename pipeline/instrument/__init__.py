"""The instrument and the sky: site, antennas, band, catalogs, phasing, transits, predict.

Production code (convert, calibrate, image, measure) and the simulator both use it; it
imports nothing else of the pipeline's.

- :mod:`~pipeline.instrument.telescope`: site, antenna layout, frequencies, chunk length;
- :mod:`~pipeline.instrument.sky`: reference catalog, calibrators, primary beam, geometry;
- :mod:`~pipeline.instrument.phasing`: meridian phase centres, pointing, bundled IERS;
- :mod:`~pipeline.instrument.transits`: calibrator transit times;
- :mod:`~pipeline.instrument.predict`: visibilities of point sources (DFT).
"""
