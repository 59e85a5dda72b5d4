"""Checkpoints: the closed payload format, loading and saving it, the one restore."""
