"""Like-for-like speed on fixed shapes, no dataset: the shapes of `../shared/bench/authors-code`.

    nice -n 0 .venv/bin/python benchmarks/bench_shapes.py --threads 2

Reference-size mask predictor with random weights (d_model 256, 4 layers, 4 attention heads,
SwiGLU 1024, M=4, K=256: 4.73M parameters), a catalogue of 25,848 items with random unique
semantic IDs, every history exactly 20 items. For each path it prints:

- training: next-item targets per second, fp32, micro-batch 64 sequences; one optimiser step =
  zero_grad, forward, backward, gradient clipping, AdamW step (the authors' inner loop). A prefix
  sample (today's path) is 20 history items + 1 target, i.e. 1 target; a window of the fast path
  is 21 items, i.e. 20 targets (each with the history the prefix ending there has);
- test decoding: seconds per user of the constrained beam search, B=50, T=4, adaptive order,
  top-10, 20 users per call, fp32, history items allowed in the lists (as the authors' code);
- the forward pass of its training micro-batch: GFLOP (matmuls counted from the shapes) and the
  achieved GFLOP/s against a measured fp32 GEMM peak of this machine.

Paths: `bidirectional` (the paper default, one forward pass per prefix and per beam step),
`inter_item_causal` (the same attention as the fast path, without its reductions), `fast`
(inter-item causal with whole-sequence training and the history-cached beam search). Compare
with the authors' code only on figures measured in the same sitting.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from distributed_rec.config import ModelConfig
from distributed_rec.decode import ValidIdIndex, model_scoring, recommend
from distributed_rec.model import build_mask_predictor, count_parameters, masking
from distributed_rec.model.objectives import Normalisers, TrainingObjective
from distributed_rec.model.vocab import encode_sequences, encode_windows
from distributed_rec.semantic_ids.id_table import SemanticIdTable

M, K = 4, 256
PATHS = ("bidirectional", "inter_item_causal", "fast")


def gemm_peak(threads: int, seconds: float = 2.0) -> float:
    """Best fp32 GFLOP/s of square matmuls (n = 1024, 2048) on `threads` threads."""
    best = 0.0
    for n in (1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)
        runs, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds / 2:
            torch.mm(a, b)
            runs += 1
        best = max(best, 2 * n**3 * runs / (time.perf_counter() - started) / 1e9)
    return best


def encoder_flops(rows: int, length: int, cfg: ModelConfig) -> float:
    """Matmul FLOPs of one full encoder pass over [rows, length] tokens (dense attention)."""
    D, F = cfg.d_model, cfg.ffn_dim
    per_token = 2 * D * (3 * D + D + 2 * F + F)
    attention = 4 * length * D  # QK^T and AV over every key
    return cfg.num_layers * rows * length * (per_token + attention)


def head_flops(positions: int, cfg: ModelConfig) -> float:
    return 2 * cfg.d_model * K * positions


def random_table(num_items: int, seed: int) -> SemanticIdTable:
    flat = np.random.default_rng(seed).choice(K**M, size=num_items, replace=False)
    codes = np.stack(np.unravel_index(flat, (K,) * M), axis=1).astype(np.int64)
    return SemanticIdTable(np.arange(num_items, dtype=np.int64), codes, K)


def model_config(path: str) -> ModelConfig:
    attention = "bidirectional" if path == "bidirectional" else "inter_item_causal"
    return ModelConfig(
        d_model=256, num_layers=4, num_attention_heads=4, ffn_dim=1024, attention=attention
    )


class TrainingShapes:
    """The micro-batches of one path: 64 prefixes of 21 items, or 64 windows of 21 items."""

    def __init__(self, path: str, table: SemanticIdTable, history: int, batch: int, seed: int):
        rng = np.random.default_rng(seed)
        self.path, self.cfg = path, model_config(path)
        self.items = history + 1
        self.sequences = [
            rng.choice(table.num_items, self.items, replace=False) for _ in range(batch)
        ]
        codes = table.dense_codes(table.num_items)
        self.whole = path == "fast"
        if self.whole:
            self.inputs = encode_windows(self.sequences, codes, K)
            self.targets = batch * history
        else:
            self.inputs = encode_sequences(self.sequences, codes, K)
            self.targets = batch
        self.norm = Normalisers(self.targets * M, batch * self.items * M)

    def noise(self, step: int):
        draw = masking.draw_window_noise if self.whole else masking.draw_noise
        return draw(masking.noise_generator(0, step), len(self.sequences), self.items, M)

    def forward_flops(self) -> float:
        """Matmul FLOPs of the objective's forward pass (both passes of the per-prefix path)."""
        B = len(self.sequences)
        if self.whole:  # TARGET (20 items) + CONTEXT (21) + CLEAN (21) in one pass
            length = (3 * self.items - 1) * M
            masked = self.targets * M / 2 + B * self.items * M / 2  # expected masked tokens
            return encoder_flops(B, length, self.cfg) + head_flops(masked, self.cfg)
        length = self.items * M
        masked = B * M / 2 + B * length / 2
        return 2 * encoder_flops(B, length, self.cfg) + head_flops(masked, self.cfg)


def time_training(shapes: TrainingShapes, steps: int, warmup: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = build_mask_predictor(shapes.cfg, M, K, shapes.items)
    objective = TrainingObjective(model, shapes.cfg, shapes.whole)
    optimizer = torch.optim.AdamW(objective.parameters(), lr=3e-3, weight_decay=0.01)
    objective.train()
    times = []
    for step in range(warmup + steps):
        noise = shapes.noise(step)
        started = time.perf_counter()
        optimizer.zero_grad()
        loss = objective(*shapes.inputs, noise, shapes.norm)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(objective.parameters(), 1.0)
        optimizer.step()
        loss.item()
        if step >= warmup:
            times.append(time.perf_counter() - started)
    objective.eval()
    with torch.no_grad():
        objective(*shapes.inputs, shapes.noise(0), shapes.norm)
        started = time.perf_counter()
        for step in range(2):
            objective(*shapes.inputs, shapes.noise(step), shapes.norm)
        forward = (time.perf_counter() - started) / 2
    return {
        "parameters": count_parameters(model),
        "step_seconds": float(np.mean(times)),
        "targets_per_s": shapes.targets / float(np.mean(times)),
        "forward_seconds": forward,
        "forward_gflop": shapes.forward_flops() / 1e9,
        "forward_gflops": shapes.forward_flops() / forward / 1e9,
    }


def time_decoding(path: str, table, index, args) -> dict[str, float]:
    torch.manual_seed(0)
    cfg = model_config(path)
    model = build_mask_predictor(cfg, M, K, args.history + 1).eval()
    rng = np.random.default_rng(1)
    histories = [
        rng.choice(table.num_items, args.history, replace=False).tolist()
        for _ in range(args.eval_users)
    ]
    scoring = model_scoring(model, "fp32", cache_history=path == "fast")
    decode = dict(
        beam_size=args.beam_size,
        steps=args.steps,
        order="adaptive",
        top_k=10,
        batch_size=args.users_per_call,
        index=index,
        exclude_history=False,
    )
    recommend(scoring, histories[:1], table, **decode)  # warm-up (index keys, allocator)
    started = time.perf_counter()
    recommend(scoring, histories, table, **decode)
    seconds = time.perf_counter() - started
    return {"s_per_user": seconds / len(histories), "users": len(histories)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    parser.add_argument("--train_steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--micro_batch", type=int, default=64)
    parser.add_argument("--history", type=int, default=20)
    parser.add_argument("--eval_users", type=int, default=20)
    parser.add_argument("--users_per_call", type=int, default=20)
    parser.add_argument("--beam_size", type=int, default=50)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--n_items", type=int, default=25848)
    parser.add_argument("--skip_train", action="store_true")
    parser.add_argument("--skip_decode", action="store_true")
    parser.add_argument("--json_out", default="")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    table = random_table(args.n_items, seed=0)
    index = ValidIdIndex(table)
    peak = gemm_peak(args.threads)
    print(
        f"torch {torch.__version__}, {args.threads} threads, load average "
        f"{os.getloadavg()[0]:.1f}; fp32 GEMM peak {peak:.1f} GFLOP/s",
        flush=True,
    )
    results: dict[str, dict[str, float]] = {"peak": {"gflops": peak}}
    for path in args.paths:
        row: dict[str, float] = {}
        if not args.skip_train:
            shapes = TrainingShapes(path, table, args.history, args.micro_batch, seed=2)
            row.update(time_training(shapes, args.train_steps, args.warmup))
            print(
                f"[{path}] train: {row['parameters']:,} parameters, {row['step_seconds']:.2f} "
                f"s/step, {row['targets_per_s']:.1f} next-item targets/s; forward "
                f"{row['forward_gflop']:.1f} GFLOP in {row['forward_seconds']:.2f} s = "
                f"{row['forward_gflops']:.1f} GFLOP/s ({row['forward_gflops'] / peak:.0%} of peak)",
                flush=True,
            )
        if not args.skip_decode:
            row.update(time_decoding(path, table, index, args))
            print(
                f"[{path}] test decoding B={args.beam_size} T={args.steps}: "
                f"{row['s_per_user']:.3f} s/user ({row['users']} users, "
                f"{args.users_per_call} per call)",
                flush=True,
            )
        results[path] = row
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    print("RESULTS_JSON " + json.dumps(results))
    if args.json_out:
        with open(args.json_out, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
