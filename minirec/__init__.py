"""minirec: a Jupyter-first reference implementation of reasoning-enhanced generative recommendation.

The sub-packages follow the pipeline, one concept a module:

    data -> sids -> models -> reasoning -> agent -> experiments      (viz draws any of them)

The shared core sits at the top: ``profiles`` (what sizes a run), ``metrics`` (the evaluation protocol),
``training`` (the Lightning fit loop every model uses) and ``artifacts`` (paths and atomic writes).
"""
__version__ = "0.1.0"
