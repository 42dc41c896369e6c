"""Evaluation: load saved models with their preprocessing and score them on benchmark splits."""
