"""Hydra configs, shipped inside the wheel as ``pricenet.conf``."""
