"""Evaluating what a generator learned: feature extractors, FID/KID maths, metric runs, plots.

The metrics themselves are plugins (`gand_register_metrics`; the built-ins live in
`plugins/metrics.py`); this package holds what they share and the code that runs them for a job.
"""
