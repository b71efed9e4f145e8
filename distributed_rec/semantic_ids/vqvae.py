"""Vector-quantised autoencoders: the Multi-Head VQ-VAE (SPEC §4) and the RQ-VAE.

Legend: B items in a batch, D input dimension, M heads, K codes per head, d_c code dimension.
Multi-head: the latent is M*d_c wide and head m quantises its own d_c slice. Residual: the
latent is d_c wide and head m quantises what heads 0..m-1 left over.
"""

from __future__ import annotations

import torch
from torch import nn


def mlp(dims: list[int]) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def nearest(x_BD: torch.Tensor, book_KD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distances [B, K] of x [B, d] to a codebook [K, d], and the argmin [B]."""
    dist_BK = (
        x_BD.pow(2).sum(1, keepdim=True) - 2 * x_BD @ book_KD.T + book_KD.pow(2).sum(1)[None, :]
    ).clamp_min(0)
    return dist_BK, dist_BK.argmin(1)


class VectorQuantizer(nn.Module):
    """M codebooks [M, K, d_c]; `multi_head` picks parallel slices or residual levels."""

    def __init__(self, num_heads: int, codebook_size: int, code_dim: int, multi_head: bool):
        super().__init__()
        self.num_heads = num_heads
        self.codebook_size = codebook_size
        self.code_dim = code_dim
        self.multi_head = multi_head
        self.codebooks = nn.Parameter(torch.randn(num_heads, codebook_size, code_dim) * 0.01)

    @property
    def latent_dim(self) -> int:
        return self.num_heads * self.code_dim if self.multi_head else self.code_dim

    def head_slice(self, z_BL: torch.Tensor, m: int) -> torch.Tensor:
        """Sub-vector m [B, d_c] of a multi-head latent [B, M*d_c]."""
        return z_BL[:, m * self.code_dim : (m + 1) * self.code_dim]

    def head_inputs(self, z_BL: torch.Tensor, codes_BM: torch.Tensor | None = None) -> list:
        """Per head the vectors it quantises ([B, d_c] each); residual heads follow `codes`
        (or the nearest codes when None)."""
        if self.multi_head:
            return list(z_BL.reshape(len(z_BL), self.num_heads, self.code_dim).unbind(1))
        inputs, residual = [], z_BL
        for m in range(self.num_heads):
            inputs.append(residual)
            code = nearest(residual, self.codebooks[m])[1] if codes_BM is None else codes_BM[:, m]
            residual = residual - self.codebooks[m][code]
        return inputs

    def forward(self, z_BL: torch.Tensor) -> dict[str, torch.Tensor]:
        """Quantise z [B, L]; returns z_q (straight-through) [B, L], codes [B, M], the VQ loss
        parts sum_m ||sg[z_m]-e_m||^2 and sum_m ||z_m-sg[e_m]||^2 (squared errors averaged over
        items and dimensions, as the reference does) and the per-item squared error [B, M]."""
        codes, quantized, errors = [], [], []
        codebook_loss = z_BL.new_zeros(())
        commitment = z_BL.new_zeros(())
        residual = z_BL
        for m in range(self.num_heads):
            x = self.head_slice(z_BL, m) if self.multi_head else residual
            _, code = nearest(x.detach(), self.codebooks[m])
            e = self.codebooks[m][code]
            codebook_loss = codebook_loss + (x.detach() - e).pow(2).mean()
            commitment = commitment + (x - e.detach()).pow(2).mean()
            errors.append((x.detach() - e.detach()).pow(2).sum(1))
            codes.append(code)
            quantized.append(e)
            if not self.multi_head:
                residual = residual - e.detach()
        z_q = torch.cat(quantized, 1) if self.multi_head else torch.stack(quantized).sum(0)
        return {
            "z_q": z_BL + (z_q - z_BL).detach(),
            "z_q_raw": z_q,
            "codes": torch.stack(codes, 1),
            "codebook_loss": codebook_loss,
            "commitment": commitment,
            "errors": torch.stack(errors, 1),
        }


class VQAutoencoder(nn.Module):
    """Encoder MLP D -> hidden -> L, vector quantiser, decoder MLP mirrored back to D."""

    def __init__(
        self,
        input_dim: int,
        hidden_dims: list[int],
        num_heads: int,
        codebook_size: int,
        code_dim: int,
        multi_head: bool,
    ) -> None:
        super().__init__()
        self.quantizer = VectorQuantizer(num_heads, codebook_size, code_dim, multi_head)
        latent = self.quantizer.latent_dim
        self.encoder = mlp([input_dim, *hidden_dims, latent])
        self.decoder = mlp([latent, *reversed(hidden_dims), input_dim])

    def forward(self, v_BD: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.encoder(v_BD)
        out = self.quantizer(z)
        out["v_hat"] = self.decoder(out["z_q"])
        out["z"] = z
        return out

    def loss(self, v_BD: torch.Tensor, out: dict[str, torch.Tensor], beta: float) -> dict:
        """||v - v_hat||^2 + sum_m(||sg[z_m]-e_m||^2 + beta ||z_m - sg[e_m]||^2), element means."""
        recon = (v_BD - out["v_hat"]).pow(2).mean()
        vq = out["codebook_loss"] + beta * out["commitment"]
        return {"loss": recon + vq, "recon": recon, "vq": vq}
