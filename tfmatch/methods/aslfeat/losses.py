"""ASLFeat's losses (spec 4.5): the descriptor loss is score-weighted, so there is no separate detector term.

Pure functions; the shared implementations live in ``tfmatch/losses/contrastive.py``.
"""

from tfmatch.losses.contrastive import circle_loss, hardest_contrastive_loss, weighted_pair_mean

__all__ = ["hardest_contrastive_loss", "circle_loss", "weighted_pair_mean"]
