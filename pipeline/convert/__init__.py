"""Conversion: a group of UVH5 subband files → one Measurement Set (python-casacore)."""
