"""warmup_core."""
