"""pricenet: config-driven PyTorch training for mobile phone price classification."""

__version__ = "0.1.0"
