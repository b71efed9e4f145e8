"""Parallel semantic IDs: tokenizers (multi-head VQ-VAE, RQ-VAE, RQ-KMeans, OPQ) and the ID table."""
