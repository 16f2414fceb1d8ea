"""Benchmarks of govern against its peers: `python -m bench --help`."""
