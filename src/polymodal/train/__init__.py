"""Training: optimisation set-up, atomic checkpoints, tasks joining models and losses."""
