"""Experiments that retrain to test influence scores: cleansing curves, noise benchmarks, trust checks."""
