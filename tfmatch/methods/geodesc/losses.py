"""GeoDesc losses: the structured losses of TFMatch over the batch similarity matrix (``loss_type`` in the config).

tfmatch trains GeoDesc with "LOG" (softmax over the cosine-similarity matrix with a learnable temperature);
"L2NET" is the same with the temperature fixed to 1; "HARD_TRIPLET" is the hardest-in-batch triplet loss. The
geometry-aware loss of the ECCV'18 paper is not in the released code (docs/methods/geodesc_contextdesc.md).
"""

from __future__ import annotations

from tfmatch.losses import structured

# loss_type -> (loss function, whether the temperature is learnt)
LOSS_TYPES = {
    "LOG": (structured.log_softmax_loss, True),
    "L2NET": (structured.log_softmax_loss, False),
    "HARD_TRIPLET": (structured.hard_triplet_loss, False),
}


def check_loss_type(loss_type: str) -> None:
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {sorted(LOSS_TYPES)}, got {loss_type!r}")


def descriptor_loss(loss_type, descriptors0, descriptors1, num_inliers, temperature):
    """The configured structured loss of L2-normalised corresponding descriptors.

    Shape:
        descriptors0, descriptors1: [B, N, D]; num_inliers: [B] int; temperature: scalar
        returns: scalar
    """
    check_loss_type(loss_type)
    fn, learnt = LOSS_TYPES[loss_type]
    if fn is structured.log_softmax_loss:
        return fn(descriptors0, descriptors1, num_inliers, temperature if learnt else 1.0)
    return fn(descriptors0, descriptors1, num_inliers)
