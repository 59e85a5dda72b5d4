"""One run: the recipe, its fits, evaluation, summaries, calibration, plots, artifacts, folders."""
