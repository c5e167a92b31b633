"""Benchmarks (run as scripts: ``python bench/NAME.py --help``); a package so mypy checks them
under their own names (``bench.crypto`` next to the ``crypto`` package)."""
