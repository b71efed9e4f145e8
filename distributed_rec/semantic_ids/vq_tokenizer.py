"""Training of the VQ autoencoders (multi-head VQ-VAE, RQ-VAE) behind the Tokenizer interface.

Legend: N items, D embedding dimension, M heads, K codes per head, L latent dimension.

Codebooks start from FAISS k-means over the encoder outputs of every item; codes unused during an
epoch are re-seeded every `dead_code_reseed_every` epochs from the head inputs of the items with
the largest quantisation error. Stopping rule: after each epoch the whole item set is encoded and
`monitor = recon_mse + collision_rate` is measured on standardised embeddings (centred and scaled
to unit mean per-dimension variance, so the first term is the unexplained fraction of variance,
whatever the scale of the embedding model; the reference feeds whitened PCA output, which has
that scale too); training stops when
the monitor has not improved by a relative `min_delta` for `patience` epochs (or at `max_epochs`),
and the weights of the best epoch are restored.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from distributed_rec.config import TokenizerConfig
from distributed_rec.semantic_ids.base import code_statistics, collision_rate, kmeans
from distributed_rec.semantic_ids.vqvae import VQAutoencoder, nearest


class VQTokenizer:
    """Multi-head VQ-VAE (`multi_head=True`, method 'mhvq') or RQ-VAE ('rqvae')."""

    def __init__(self, config: TokenizerConfig, multi_head: bool, writer: Any = None) -> None:
        self.config = config
        self.multi_head = multi_head
        self.num_heads = config.num_heads
        self.codebook_size = config.codebook_size
        self.writer = writer
        self.model: VQAutoencoder | None = None
        self.initial_codebooks: np.ndarray | None = None  # float32 [M, K, d_c] from k-means
        self.mean = torch.zeros(())  # [D] embedding mean, set by fit
        self.scale = torch.ones(())  # 1 / sqrt(mean per-dimension variance), set by fit
        self.history: dict[str, Any] = {}

    # --- training ------------------------------------------------------------------------------

    def _init_codebooks(self, v_ND: torch.Tensor) -> None:
        """FAISS k-means per head over the encoder outputs of all items (residuals for RQ)."""
        assert self.model is not None
        quantizer = self.model.quantizer
        with torch.no_grad():
            z = self.model.encoder(v_ND)
            residual = z
            for m in range(self.num_heads):
                x = quantizer.head_slice(z, m) if self.multi_head else residual
                seed = self.config.seed + m
                book = kmeans(x.numpy(), self.codebook_size, self.config.kmeans_iters, seed)
                quantizer.codebooks[m] = torch.from_numpy(book)
                if not self.multi_head:
                    book_KC = quantizer.codebooks[m]
                    residual = residual - book_KC[nearest(residual, book_KC)[1]]
        self.initial_codebooks = quantizer.codebooks.detach().numpy().copy()

    def _reseed_dead_codes(self, v_ND: torch.Tensor, used_MK: torch.Tensor) -> int:
        """Move codes unused this epoch onto the head inputs with the largest error."""
        assert self.model is not None
        quantizer = self.model.quantizer
        with torch.no_grad():
            out = self.model(v_ND)
            inputs = quantizer.head_inputs(out["z"], out["codes"])
            reseeded = 0
            for m in range(self.num_heads):
                dead = torch.nonzero(~used_MK[m]).flatten()
                if len(dead) == 0:
                    continue
                worst = torch.argsort(out["errors"][:, m], descending=True, stable=True)
                chosen = worst[: len(dead)]
                quantizer.codebooks[m, dead[: len(chosen)]] = inputs[m][chosen]
                reseeded += len(chosen)
        return reseeded

    def _evaluate(self, v_ND: torch.Tensor) -> dict[str, Any]:
        assert self.model is not None
        self.model.eval()
        with torch.no_grad():
            out = self.model(v_ND)
        self.model.train()
        codes = out["codes"].numpy()
        recon = float((v_ND - out["v_hat"]).pow(2).mean())
        rate = collision_rate(codes)
        stats = code_statistics(codes, self.codebook_size)
        return {
            "recon_mse": recon,
            "collision_rate": rate,
            "monitor": recon + rate,
            "min_usage": min(stats["codebook_usage"]),
        }

    def fit(self, embeddings: np.ndarray) -> VQTokenizer:
        cfg = self.config
        started = time.perf_counter()
        torch.manual_seed(cfg.seed)
        generator = torch.Generator().manual_seed(cfg.seed)
        raw = torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32))
        self.mean = raw.mean(0)
        self.scale = raw.var(0, unbiased=False).mean().clamp_min(1e-12).rsqrt()
        v = self._standardize(embeddings)
        self.model = VQAutoencoder(
            v.shape[1],
            cfg.hidden_dims,
            cfg.num_heads,
            cfg.codebook_size,
            cfg.code_dim,
            self.multi_head,
        )
        self._init_codebooks(v)
        optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        best = {"monitor": float("inf"), "epoch": -1, "state": None, "eval": {}}
        wait, reseeded_total, epoch = 0, 0, 0
        progress = tqdm(
            range(1, cfg.max_epochs + 1),
            desc=f"tokenize[{self._method}]",
            leave=False,
            mininterval=2.0,
            disable=None,  # no bar when stderr is not a terminal: a redirected log stays readable
        )
        for epoch in progress:
            totals, used = self._train_epoch(v, optimizer, generator)
            if cfg.dead_code_reseed_every and epoch % cfg.dead_code_reseed_every == 0:
                reseeded_total += self._reseed_dead_codes(v, used)
            scores = self._evaluate(v)
            self._log(epoch, totals, scores, used)
            progress.set_postfix(
                recon=f"{scores['recon_mse']:.4g}", coll=f"{scores['collision_rate']:.3f}"
            )
            if scores["monitor"] < best["monitor"] * (1 - cfg.min_delta):
                state = copy.deepcopy(self.model.state_dict())
                best = {
                    "monitor": scores["monitor"],
                    "epoch": epoch,
                    "state": state,
                    "eval": scores,
                }
                wait = 0
            else:
                wait += 1
                if wait >= cfg.patience:
                    break
        progress.close()
        self.model.load_state_dict(best["state"])
        self.model.eval()
        self.history = {
            "epochs": epoch,
            "best_epoch": best["epoch"],
            "stopped_early": epoch < cfg.max_epochs,
            "best_monitor": best["monitor"],
            "reseeded_codes": reseeded_total,
            "train_seconds": time.perf_counter() - started,
        }
        return self

    def _train_epoch(
        self, v_ND: torch.Tensor, optimizer: torch.optim.Optimizer, generator: torch.Generator
    ) -> tuple[dict[str, float], torch.Tensor]:
        """One pass over the items in a seeded random order; mean losses and codes used [M, K]."""
        assert self.model is not None
        cfg = self.config
        n = len(v_ND)
        used = torch.zeros(cfg.num_heads, cfg.codebook_size, dtype=torch.bool)
        totals = {"loss": 0.0, "recon": 0.0, "vq": 0.0}
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, cfg.batch_size):
            batch = v_ND[order[start : start + cfg.batch_size]]
            out = self.model(batch)
            losses = self.model.loss(batch, out, cfg.beta)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            optimizer.step()
            for m in range(cfg.num_heads):
                used[m, out["codes"][:, m]] = True
            for key in totals:
                totals[key] += losses[key].item() * len(batch) / n
        return totals, used

    @property
    def _method(self) -> str:
        return "mhvq" if self.multi_head else "rqvae"

    def _log(self, epoch: int, totals: dict, scores: dict, used: torch.Tensor) -> None:
        if self.writer is None:
            return
        for key, value in totals.items():
            self.writer.add_scalar(f"tokenize/train_{key}", value, epoch)
        for key in ("recon_mse", "collision_rate", "monitor", "min_usage"):
            self.writer.add_scalar(f"tokenize/{key}", scores[key], epoch)
        self.writer.add_scalar("tokenize/epoch_usage", float(used.float().mean()), epoch)

    # --- inference -----------------------------------------------------------------------------

    def _standardize(self, embeddings: np.ndarray) -> torch.Tensor:
        """float32 [N, D]: centred, scaled to unit mean per-dimension variance (fit statistics)."""
        raw = torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32))
        return (raw - self.mean) * self.scale

    def _forward(self, embeddings: np.ndarray) -> dict[str, torch.Tensor]:
        assert self.model is not None, "fit the tokenizer first"
        self.model.eval()
        with torch.no_grad():
            return self.model(self._standardize(embeddings))

    def encode(self, embeddings: np.ndarray) -> np.ndarray:
        return self._forward(embeddings)["codes"].numpy().astype(np.int64)

    def code_distances(self, embeddings: np.ndarray) -> np.ndarray:
        assert self.model is not None
        out = self._forward(embeddings)
        quantizer = self.model.quantizer
        with torch.no_grad():
            inputs = quantizer.head_inputs(out["z"], out["codes"])
            dists = [nearest(x, quantizer.codebooks[m])[0] for m, x in enumerate(inputs)]
        return torch.stack(dists, 1).numpy()

    def reconstruct(self, embeddings: np.ndarray) -> np.ndarray:
        assert self.model is not None
        out = self._forward(embeddings)
        with torch.no_grad():
            return (self.model.decoder(out["z_q_raw"]) / self.scale + self.mean).numpy()

    def state_dict(self) -> dict[str, Any]:
        assert self.model is not None and self.initial_codebooks is not None
        return {
            "method": self._method,
            "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "initial_codebooks": torch.from_numpy(self.initial_codebooks),
            "input_mean": self.mean.clone(),
            "input_scale": self.scale.clone(),
        }
