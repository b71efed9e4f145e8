"""What training shows: TensorBoard scalars, a tqdm bar and train_metrics.json (rank 0 only)."""

from __future__ import annotations

import logging
import resource
import sys
from typing import Any

import torch

from distributed_rec.artifacts import RunPaths, write_json_atomic
from distributed_rec.distributed import env

log = logging.getLogger(__name__)


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Reporter:
    """TensorBoard tags: train/loss, train/<term>, train/lr, train/grad_norm,
    perf/tokens_per_s, perf/samples_per_s, perf/targets_per_s (next-item targets: one per
    prefix sample, one per item after the first of a window), valid/<metric>, valid/best."""

    def __init__(self, paths: RunPaths, is_main: bool, total_steps: int, initial_step: int) -> None:
        self.paths, self.is_main = paths, is_main
        self.writer: Any = None
        self.bar: Any = None
        self._window = [0, 0, 0, 0.0]  # samples, targets, tokens, seconds since the last log
        if is_main:
            from torch.utils.tensorboard import SummaryWriter
            from tqdm import tqdm

            self.writer = SummaryWriter(str(paths.tensorboard("train")))
            self.bar = tqdm(
                total=total_steps,
                initial=initial_step,
                desc="train",
                unit="step",
                dynamic_ncols=True,
                file=sys.stderr,
                disable=None,
            )

    def step(
        self,
        step: int,
        losses: dict[str, float],
        lr: float,
        grad_norm: Any,
        samples: int,
        targets: int,
        tokens: int,
        seconds: float,
        log_every: int,
    ) -> None:
        if not self.is_main:
            return
        self._window = [
            a + b for a, b in zip(self._window, (samples, targets, tokens, seconds), strict=False)
        ]
        self.bar.update(1)
        if step % max(1, log_every):
            return
        window_samples, window_targets, window_tokens, window_seconds = self._window
        samples_per_s = window_samples / max(window_seconds, 1e-9)
        targets_per_s = window_targets / max(window_seconds, 1e-9)
        tokens_per_s = window_tokens / max(window_seconds, 1e-9)
        self._window = [0, 0, 0, 0.0]
        for name, value in losses.items():
            self.writer.add_scalar(f"train/{name}", value, step)
        self.writer.add_scalar("train/lr", lr, step)
        if grad_norm is not None:
            self.writer.add_scalar("train/grad_norm", float(grad_norm), step)
        self.writer.add_scalar("perf/samples_per_s", samples_per_s, step)
        self.writer.add_scalar("perf/targets_per_s", targets_per_s, step)
        self.writer.add_scalar("perf/tokens_per_s", tokens_per_s, step)
        self.bar.set_postfix(loss=f"{losses['loss']:.4f}", targets_s=f"{targets_per_s:.0f}")
        if self.bar.disable:  # not a terminal (a log file): a line instead of the bar
            log.info(
                "step %d: loss %.4f, lr %.2e, %.0f targets/s, %.0f tokens/s",
                step,
                losses["loss"],
                lr,
                targets_per_s,
                tokens_per_s,
            )

    def validation(self, step: int, metrics: dict[str, float], best: float) -> None:
        if self.is_main:
            self._metrics("valid", f"validation at step {step}", step, metrics, best)

    def test_report(self, step: int, metrics: dict[str, float]) -> None:
        """Test metrics reported beside a validation (train.report_test), never selected on."""
        if self.is_main:
            self._metrics("test", f"test (reported, not selected on) at step {step}", step, metrics)

    def _metrics(
        self,
        prefix: str,
        title: str,
        step: int,
        metrics: dict[str, float],
        best: float | None = None,
    ) -> None:
        """TensorBoard scalars <prefix>/<metric> (and <prefix>/best), then one log line."""
        for name, value in metrics.items():
            self.writer.add_scalar(f"{prefix}/{name}", value, step)
        if best is not None:
            self.writer.add_scalar(f"{prefix}/best", best, step)
        self.writer.flush()
        line = f"{title}: " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
        if self.bar.disable:
            log.info("%s", line)
        else:
            self.bar.write(line)

    def flush(self) -> None:
        """Write buffered TensorBoard events to their file (before it is uploaded)."""
        if self.is_main:
            self.writer.flush()

    def close(self) -> None:
        if self.is_main:
            self.bar.close()
            self.writer.close()

    def finish(self, summary: dict[str, Any]) -> None:
        """Adds peak memory (max over processes) and writes train_metrics.json; collective."""
        peak = env.all_reduce_max(torch.tensor([peak_rss_mb()], dtype=torch.float64))
        summary["peak_rss_mb"] = float(peak[0])
        summary["peak_rss_mb_rank0"] = peak_rss_mb() if self.is_main else None
        if self.is_main:
            write_json_atomic(self.paths.train_metrics, summary)
        self.close()
