"""minirec: a Jupyter-first reference implementation of reasoning-enhanced generative recommendation.

The package follows the notebooks' story, one concept a module:
data -> metrics -> baselines / sasrec (the bar) -> (later) embeddings -> semantic IDs ->
backbone -> generative recommender -> reasoning -> agent.
"""
__version__ = "0.1.0"
