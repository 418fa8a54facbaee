"""Utilities, one topic a module: boxes, checkpoints, FLOPs, logging, torch helpers, data, metrics, plots."""
