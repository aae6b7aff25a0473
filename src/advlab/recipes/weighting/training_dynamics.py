"""CAAT's six training-dynamics features of each sample (xiaolingzhou98/CAAT utils.py ``adv_feature``),
computed from the clean logits of the step, in the code's column order."""
from __future__ import annotations

import torch

FEATURES = ("loss", "class_loss_last_epoch", "logit_gradient_norm", "margin", "negative_entropy", "class_prior")


def training_dynamics(logits: torch.Tensor, y: torch.Tensor, class_loss: torch.Tensor,
                      class_prior: torch.Tensor) -> torch.Tensor:
    """(B, 6) features (float32, or float64 for float64 logits) of the clean logits (B, C) and labels y (B,):

    1. the cross-entropy loss l_i; 2. the class-average clean loss of class y_i in the previous epoch
    (``class_loss`` (C,)); 3. ``||e_y - p||_2``, the norm of the loss's gradient w.r.t. the logits;
    4. the margin ``p_y - max_{k != y} p_k``; 5. ``sum_k p_k log p_k`` (negative entropy); 6. the class prior,
    the share of class y_i in the training split (``class_prior`` (C,)).

    The features keep the graph of ``logits`` (the official meta step differentiates through them,
    xiaolingzhou98/CAAT utils.py lines 302-308); pass ``logits.detach()`` for constants.
    """
    z = logits.to(torch.promote_types(logits.dtype, torch.float32))
    log_p = z.log_softmax(1)
    p = log_p.exp()
    y = y.long()
    loss = -log_p.gather(1, y[:, None]).squeeze(1)
    one_hot = torch.nn.functional.one_hot(y, z.shape[1]).to(z.dtype)
    grad_norm = (one_hot - p).norm(dim=1)
    p_y = p.gather(1, y[:, None]).squeeze(1)
    p_other = p.scatter(1, y[:, None], float("-inf")).max(1).values
    neg_entropy = (p * log_p).sum(1)
    return torch.stack([loss, class_loss.to(z.device, z.dtype)[y], grad_norm, p_y - p_other, neg_entropy,
                        class_prior.to(z.device, z.dtype)[y]], dim=1)
