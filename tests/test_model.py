"""The mask predictor: shapes, the vocabulary layout, attention variants, padding invariance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distributed_rec.config import ModelConfig
from distributed_rec.model import build_mask_predictor, count_parameters
from distributed_rec.model.attention import attention_mask, structure_mask
from distributed_rec.model.vocab import encode_sequences

M, K = 2, 5


def tiny_model(
    attention: str = "bidirectional", dropout: float = 0.0, num_layers: int = 1, seed: int = 0
):
    torch.manual_seed(seed)
    cfg = ModelConfig(
        d_model=32,
        num_layers=num_layers,
        num_attention_heads=2,
        ffn_dim=48,
        dropout=dropout,
        attention=attention,
    )
    return build_mask_predictor(cfg, num_heads=M, codebook_size=K, max_items=4).eval()


CODES = np.array([[0, 1], [2, 3], [4, 0], [1, 1], [3, 2]], dtype=np.int64)


def test_shapes_and_target_logits_match_forward():
    model = tiny_model()
    tokens, is_pad = encode_sequences([[0, 1, 2], [3, 4]], CODES, K)
    assert tokens.shape == (2, 6)
    logits = model(tokens, is_pad)
    assert logits.shape == (2, 6, K)
    target = model.target_logits(tokens, is_pad)
    assert target.shape == (2, M, K) and target.dtype == torch.float32
    torch.testing.assert_close(target, logits[:, -M:])


def test_output_at_a_position_uses_only_its_codebook_head():
    model = tiny_model()
    with torch.no_grad():
        model.heads.bias[1] = 100.0  # only codebook 1's scores move
    tokens, is_pad = encode_sequences([[0, 1]], CODES, K)
    logits = model(tokens, is_pad)
    assert (logits[0, 1::2] > 50).all()  # positions 1, 3 hold codebook 1
    assert (logits[0, 0::2] < 50).all()


def test_left_padding_does_not_change_real_positions():
    model = tiny_model()
    alone, alone_pad = encode_sequences([[3, 4]], CODES, K)
    batch, batch_pad = encode_sequences([[3, 4], [0, 1, 2]], CODES, K)
    assert batch_pad[0, :2].all() and not batch_pad[0, 2:].any()
    torch.testing.assert_close(model(batch, batch_pad)[0, 2:], model(alone, alone_pad)[0])


def test_structure_masks_of_the_attention_variants():
    # L = 6 tokens, M = 2: items (slots from the end) 2,2,1,1,0,0
    L = 6
    causal = structure_mask("causal", L, M, torch.device("cpu"))
    assert torch.equal(causal, torch.tril(torch.ones(L, L, dtype=torch.bool)))
    inter = structure_mask("inter_item_causal", L, M, torch.device("cpu")).int()
    expected_inter = torch.tensor(
        [[1, 1, 0, 0, 0, 0]] * 2 + [[1, 1, 1, 1, 0, 0]] * 2 + [[1, 1, 1, 1, 1, 1]] * 2
    )
    assert torch.equal(inter, expected_inter)
    intra = structure_mask("intra_item_causal", L, M, torch.device("cpu")).int()
    expected_intra = torch.tensor(
        [
            [1, 0, 1, 1, 1, 1],
            [1, 1, 1, 1, 1, 1],
            [1, 1, 1, 0, 1, 1],
            [1, 1, 1, 1, 1, 1],
            [1, 1, 1, 1, 1, 0],
            [1, 1, 1, 1, 1, 1],
        ]
    )
    assert torch.equal(intra, expected_intra)
    assert structure_mask("bidirectional", L, M, torch.device("cpu")).all()


def test_padding_keys_are_hidden_and_padded_queries_see_themselves():
    is_pad = torch.tensor([[True, True, False, False]])
    allowed = attention_mask("causal", is_pad, M)[0, 0].int()
    expected = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]])
    assert torch.equal(allowed, expected)


@pytest.mark.parametrize("kind", ["causal", "inter_item_causal", "intra_item_causal"])
def test_causal_variants_do_not_see_the_future(kind):
    model = tiny_model(kind)
    tokens, is_pad = encode_sequences([[0, 1, 2]], CODES, K)
    changed = tokens.clone()
    changed[0, -1] = 1 * K + 4  # change the last token (codebook 1 of the target)
    before, after = model(tokens, is_pad), model(changed, is_pad)
    # the first item (positions 0-1) never attends the target under any causal variant ...
    visible_first = kind == "intra_item_causal"
    assert torch.allclose(before[0, :2], after[0, :2]) != visible_first
    # ... and position 4 (target, codebook 0) sees position 5 only when bidirectional inside
    assert torch.allclose(before[0, 4], after[0, 4]) == (kind != "inter_item_causal")


def test_bidirectional_sees_everything():
    model = tiny_model()
    tokens, is_pad = encode_sequences([[0, 1, 2]], CODES, K)
    changed = tokens.clone()
    changed[0, -1] = 1 * K + 4
    assert not torch.allclose(model(tokens, is_pad)[0, 0], model(changed, is_pad)[0, 0])


def test_reference_size_parameter_count():
    model = build_mask_predictor(ModelConfig(), num_heads=4, codebook_size=256, max_items=21)
    assert count_parameters(model) == 4_728_832


def test_too_many_items_is_an_error():
    model = tiny_model()
    tokens, is_pad = encode_sequences([[0, 1, 2, 3, 4]], CODES, K)
    with pytest.raises(ValueError, match="max_items=4"):
        model(tokens, is_pad)


@pytest.mark.parametrize(
    "attention", ["bidirectional", "causal", "inter_item_causal", "intra_item_causal"]
)
def test_target_only_last_layer_equals_the_full_pass(attention):
    model = tiny_model(attention, num_layers=2, seed=1)
    tokens, is_pad = encode_sequences([[0, 1, 2, 3], [3, 4], [1]], CODES, K)
    full = model(tokens, is_pad)[:, -M:]
    torch.testing.assert_close(model.target_logits(tokens, is_pad), full)
    assert model.encode(tokens, is_pad, last_only=M).shape == (3, M, 32)
