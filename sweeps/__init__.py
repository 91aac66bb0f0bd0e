"""Sweep specs, grid expansion, Ray Tune orchestration, resume and the `warmup-sweep` CLI."""
