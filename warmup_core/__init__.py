"""The science core: schedules, parameterizations, models, optimizers, curvature, stability.

Depends on torch and numpy only; knows nothing of Ray, files or sweeps.
"""
