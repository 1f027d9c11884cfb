"""`w2sd bench`, `w2sd eval`, `w2sd report`: grids of work items, sharded runs, metrics and reports.

Modules import torch (and the metric models) lazily, so the CLI can import this package at start-up.
"""
