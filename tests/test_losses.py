"""Masking schedules and the weighted losses of SPEC §6 against hand-computed numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from distributed_rec.config import ModelConfig
from distributed_rec.model import build_mask_predictor, losses, masking
from distributed_rec.model.objectives import Normalisers, objective_terms
from distributed_rec.model.vocab import encode_sequences, mask_token

M, K = 2, 3


def fixed_noise(**fields) -> masking.MaskNoise:
    """Noise for 2 sequences, max 3 items (6 tokens), overridable per field."""
    base = {
        "k_G": torch.tensor([1, 2]),
        "order_GM": torch.tensor([[0.9, 0.1], [0.5, 0.6]]),
        "j_GS": torch.tensor([[0, 2, 1], [1, 0, 2]]),
        "token_u_GT": torch.tensor(
            [[0.2, 0.7, 0.1, 0.9, 0.4, 0.3], [0.6, 0.1, 0.8, 0.2, 0.0, 0.5]]
        ),
        "t_G": torch.tensor([0.5, 1.0]),
    }
    base.update(fields)
    return masking.MaskNoise(**base)


def test_next_item_mask_masks_exactly_k_target_tokens():
    mask = masking.next_item_mask(fixed_noise(), length=6, num_heads=M)
    # sample 0: k=1, smallest order value at target position 1 -> token 5
    # sample 1: k=2 -> both target tokens
    expected = torch.tensor([[0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 1, 1]], dtype=torch.bool)
    assert torch.equal(mask, expected)


def test_history_mask_uses_per_item_rates_counted_from_the_end():
    is_pad = torch.tensor([[True, True, False, False, False, False], [False] * 6])
    mask, rate = masking.history_mask(fixed_noise(), is_pad, num_heads=M)
    # tokens left to right are columns 5..0 of token_u; items left to right are j columns 2..0
    assert torch.equal(rate[0], torch.tensor([0.5, 0.5, 1.0, 1.0, 0.0, 0.0]))
    assert torch.equal(rate[1], torch.tensor([1.0, 1.0, 0.0, 0.0, 0.5, 0.5]))
    # sample 0 u (left to right): .3 .4 .9 .1 .7 .2 ; pads never masked; rate 1 masks all
    assert mask[0].tolist() == [False, False, True, True, False, False]
    # sample 1 u: .5 .0 .2 .8 .1 .6 ; rate 1, 1, 0, 0, .5, .5
    assert mask[1].tolist() == [True, True, False, False, True, False]


def test_sequence_mask_uses_one_rate_per_sequence():
    is_pad = torch.tensor([[True, True, False, False, False, False], [False] * 6])
    mask, rate = masking.sequence_mask(fixed_noise(), is_pad)
    assert torch.equal(rate[:, 0], torch.tensor([0.5, 1.0]))
    assert mask[0].tolist() == [False, False, False, True, False, True]
    assert mask[1].all()


def test_draw_noise_ranges_and_reproducibility():
    a = masking.draw_noise(masking.noise_generator(0, 1, 2), 500, 5, 4)
    b = masking.draw_noise(masking.noise_generator(0, 1, 2), 500, 5, 4)
    c = masking.draw_noise(masking.noise_generator(0, 1, 3), 500, 5, 4)
    assert torch.equal(a.token_u_GT, b.token_u_GT) and not torch.equal(a.token_u_GT, c.token_u_GT)
    assert set(a.k_G.tolist()) == {1, 2, 3, 4}
    assert set(a.j_GS.flatten().tolist()) == {0, 1, 2, 3, 4}
    assert a.t_G.min() > 0 and a.t_G.max() <= 1


def test_next_item_loss_hand_computed():
    # two masked target tokens of one sample with k = 2, M = 4: weight M/k = 2
    logits = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])
    codes = torch.tensor([0, 1])
    total = losses.next_item_loss_sum(logits, codes, torch.tensor([2, 2]), num_heads=4)
    assert total.item() == pytest.approx(2 * (math.log(4 / 3) + math.log(2)), rel=1e-6)


def test_rate_weighted_loss_hand_computed():
    logits = torch.tensor([[0.0, 0.0, 0.0], [math.log(2.0), 0.0, 0.0]])
    codes = torch.tensor([2, 0])
    total = losses.rate_weighted_loss_sum(logits, codes, torch.tensor([0.25, 0.5]))
    assert total.item() == pytest.approx(4 * math.log(3) + 2 * math.log(2), rel=1e-6)


def test_token_codes_removes_the_position_offset():
    tokens = torch.tensor([[6, 6, 0 * K + 2, 1 * K + 1]])  # two pads (PAD = M*K = 6)
    assert losses.token_codes(tokens, M, K)[0, 2:].tolist() == [2, 1]


class UniformLogits(torch.nn.Module):
    """A stand-in predictor whose every score is 0, so each masked CE is exactly ln K."""

    num_heads, codebook_size = M, K

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def encode(self, tokens_BL, is_pad_BL):
        self.seen.append(tokens_BL.clone())
        return torch.zeros(*tokens_BL.shape, 4, requires_grad=True)

    def head_at(self, hidden_ND, codebook_N):
        return hidden_ND.sum(-1, keepdim=True).expand(-1, K) * 0


CODES = np.array([[0, 1], [2, 2], [1, 0]], dtype=np.int64)


def test_llada_objective_hand_computed():
    tokens, is_pad = encode_sequences([[0, 1], [2, 0, 1]], CODES, K)  # lengths 2 and 3 items
    model = UniformLogits()
    norm = Normalisers(target_tokens=2 * M, real_tokens=float((~is_pad).sum()))
    cfg = ModelConfig(item_loss_weight=1.0, history_loss_weight=3.5)
    terms = objective_terms(model, tokens, is_pad, fixed_noise(), cfg, norm)
    ln_k = math.log(K)
    # item: sample 0 masks 1 token with weight 2/1, sample 1 masks 2 with weight 2/2
    assert terms["item"].item() == pytest.approx((2 * ln_k + 2 * ln_k) / 4, rel=1e-6)
    # history: masks from test_history_mask_uses_per_item_rates (same noise and padding):
    # sample 0: two tokens at rate 1 -> 2 ln K; sample 1: two at rate 1, one at rate .5 -> 4 ln K
    assert terms["history"].item() == pytest.approx(6 * ln_k / 10, rel=1e-6)
    assert terms["loss"].item() == pytest.approx(ln_k + 3.5 * 0.6 * ln_k, rel=1e-6)
    # the item pass saw the clean history and MASK only on the chosen target tokens
    item_input = model.seen[0]
    assert (item_input == mask_token(M, K)).sum().item() == 3
    assert torch.equal(item_input[:, :-M], tokens[:, :-M])


def test_zero_weight_skips_the_pass_and_maskgr_hand_computed():
    tokens, is_pad = encode_sequences([[0, 1], [2, 0, 1]], CODES, K)
    norm = Normalisers(target_tokens=2 * M, real_tokens=10.0)
    model = UniformLogits()
    terms = objective_terms(
        model, tokens, is_pad, fixed_noise(), ModelConfig(history_loss_weight=0.0), norm
    )
    assert set(terms) == {"item", "loss"} and len(model.seen) == 1
    terms = objective_terms(
        model, tokens, is_pad, fixed_noise(), ModelConfig(objective="maskgr"), norm
    )
    # sample 0 (rate .5): 2 tokens masked, weight 2; sample 1 (rate 1): all 6 masked, weight 1
    assert terms["maskgr"].item() == pytest.approx((2 * 2 + 6) * math.log(K) / 10, rel=1e-6)


def test_objective_with_a_real_model_matches_full_logits():
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=16, num_layers=1, num_attention_heads=2, ffn_dim=16, dropout=0.0)
    model = build_mask_predictor(cfg, M, K, max_items=3)
    tokens, is_pad = encode_sequences([[0, 1], [2, 0, 1]], CODES, K)
    norm = Normalisers(target_tokens=4.0, real_tokens=10.0)
    noise = fixed_noise()
    terms = objective_terms(model, tokens, is_pad, noise, cfg, norm)
    mask, rate = masking.history_mask(noise, is_pad, M)
    logits = model(tokens.masked_fill(mask, mask_token(M, K)), is_pad)
    codes = losses.token_codes(tokens, M, K)
    ce = torch.nn.functional.cross_entropy(logits[mask], codes[mask], reduction="none")
    torch.testing.assert_close(terms["history"], (ce / rate[mask]).sum() / 10.0)
