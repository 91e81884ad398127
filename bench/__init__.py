"""Benchmarks: each measures mlrig's way against a baseline side by side in one run."""
