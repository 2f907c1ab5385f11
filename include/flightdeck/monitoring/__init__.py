"""Watching a model once it is live: the baseline each trained version is compared with (baseline.py)."""
