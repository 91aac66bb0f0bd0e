"""The science core: schedules, parameterizations, models, optimizers, curvature, stability.

Depends on torch and numpy only; knows nothing of Ray, files or sweeps. Import from
the submodules (each declares its public names in ``__all__``); importing the package
itself loads none of them:

* ``schedules``: warmup shapes and decays as pure functions of the step.
* ``parameterization``: SP, NTP and muP layer rules.
* ``registry``: name -> builder registries with option schemas (``Registry``).
* ``models``: the built-in models and ``MODEL_REGISTRY``, ``build_model``.
* ``optim``: SGD, Adam, AdamW, GI-Adam, random-v0 Adam, RAdam with their stability
  thresholds.
* ``adaptive``: the sharpness-adaptive warmup controller.
* ``hvp``: Hessian-vector products (``HVPOperator``, ``BlockHVPOperator``).
* ``lanczos``: top-k eigensolvers on matrix-vector products.
* ``curvature``: sharpness and pre-conditioned sharpness (``sharpness``,
  ``top_eigenpairs``, ``preconditioned_sharpness``, ``block_sharpness``).
* ``spectrum``: Hessian trace and spectral density.
* ``stability``: thresholds, the catapult estimate of eta_c, regime detection.
* ``checks``: argument checks shared by the numerical routines.
"""

__all__ = [
    "adaptive",
    "checks",
    "curvature",
    "hvp",
    "lanczos",
    "models",
    "optim",
    "parameterization",
    "registry",
    "schedules",
    "spectrum",
    "stability",
]
