"""ContextDesc losses (TFMatch ``model.py:training``): total = L_aug + L_raw + L_quad (+ weight decay).

- L_aug: "LOG" softmax loss on the augmented descriptors (temperature ``scale_temperature``);
- L_raw: the same loss on the L2-normalised raw local features, with its own temperature (end-to-end,
  "ContextDesc++");
- L_quad: matchability ranking loss on the true matches, from the matchability logits.
"""

from __future__ import annotations

from tfmatch.losses import structured


def contextdesc_losses(predictions, num_inliers, temperature, raw_temperature):
    """Unweighted ContextDesc loss terms.

    Shape:
        predictions: ``descriptors0/1``, ``raw_descriptors0/1`` [B,N,D] (normalised), ``matchability0/1`` [B,N]
        num_inliers: [B] int; temperature, raw_temperature: scalars
        returns: dict ``aug_loss``, ``raw_loss``, ``quad_loss`` (scalars)
    """
    return {
        "aug_loss": structured.log_softmax_loss(predictions["descriptors0"], predictions["descriptors1"],
                                                num_inliers, temperature),
        "raw_loss": structured.log_softmax_loss(predictions["raw_descriptors0"], predictions["raw_descriptors1"],
                                                num_inliers, raw_temperature),
        "quad_loss": structured.quadruple_ranking_loss(predictions["matchability0"], predictions["matchability1"],
                                                       num_inliers),
    }
