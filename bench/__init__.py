"""Benchmarks: scripts that print measured figures (see docs/BENCHMARKS.md)."""
