"""Ingest: watch incoming/, group subband files by timestamp, register observations."""
