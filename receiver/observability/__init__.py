"""Prometheus metrics (every one declared in `metrics`) and their multiprocess files."""
