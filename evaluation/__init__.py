"""Scoring of generated run folders: VBench-Long (in its own venv, as a subprocess), weight-free drift
metrics, retrieval diagnostics, and the paper's Table 2 with Avg. Rank."""
