"""The application layer: runs (fit, load, generate), checkpoints, CLI, plots, file safety."""
