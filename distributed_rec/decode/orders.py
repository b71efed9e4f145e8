"""Which masked positions of each beam are filled next: adaptive (most confident) or fixed order.

Legend: R beams, M positions, K codes per position.
"""

from __future__ import annotations

import torch

ORDERS = ("adaptive", "l2r", "r2l")


def position_priority(order: str, log_probs_RMK: torch.Tensor) -> torch.Tensor:
    """float [R, M]: higher is filled earlier.

    adaptive: the confidence of a position, log of the max probability over its valid codes
    (invalid codes must already be -inf in `log_probs_RMK`); l2r: position 0 first; r2l: the last
    position first.
    """
    R, M, _ = log_probs_RMK.shape
    positions_M = torch.arange(M, device=log_probs_RMK.device, dtype=torch.float32)
    if order == "adaptive":
        return log_probs_RMK.amax(-1)
    if order == "l2r":
        return (-positions_M).expand(R, M)
    if order == "r2l":
        return positions_M.expand(R, M)
    raise ValueError(f"decode order {order!r} is not one of {', '.join(ORDERS)}")


def choose_positions(
    order: str, log_probs_RMK: torch.Tensor, filled_RM: torch.Tensor, count: int
) -> torch.Tensor:
    """bool [R, M]: the `count` unfilled positions of each beam with the highest priority.

    Ties go to the lower position index; a filled position is never chosen.
    """
    priority_RM = position_priority(order, log_probs_RMK).float()
    lowest = torch.finfo(torch.float32).min
    priority_RM = torch.where(filled_RM, -torch.inf, priority_RM.clamp(min=lowest))
    ranked_RM = torch.sort(priority_RM, dim=-1, descending=True, stable=True).indices
    chosen_RM = torch.zeros_like(filled_RM)
    chosen_RM.scatter_(1, ranked_RM[:, :count], True)
    if (chosen_RM & filled_RM).any():
        raise ValueError(f"cannot fill {count} more positions: too few are still masked")
    return chosen_RM
