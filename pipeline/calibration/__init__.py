"""Calibration: flagging, bandpass and gain solutions, caltables, the calibrate stage."""
