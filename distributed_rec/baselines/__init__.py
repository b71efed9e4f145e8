"""Baselines trained and evaluated on the same splits and metrics as LLaDA-Rec (SPEC §9).

SASRec: a causal Transformer over item ids with cross-entropy over all items.
TIGER-style: a causal Transformer over RQ-VAE semantic-ID tokens, decoded autoregressively with
beam search constrained (by a prefix trie) to IDs of real items.
"""
