"""Using a trained checkpoint: the Predictor and attributions."""
