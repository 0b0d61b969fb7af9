"""Faust agents, one module per stage: each subscribes to its input topics and
runs batches through its stage (hub.app.run_batches). Nothing else."""
