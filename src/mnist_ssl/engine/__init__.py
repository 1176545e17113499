"""The training engine: loop, optimiser and schedule, checkpoints, callbacks."""
