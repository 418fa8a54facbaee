"""Validation (val.py's parts): its options, the scoring of predictions against labels, and what is written per
image (txt labels, COCO JSON, mosaics)."""
