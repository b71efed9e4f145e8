"""The one training loop, run by every process however it was launched (SPEC §6).

Each optimiser step consumes one global batch: this process's micro-batches (data.py), one
DeepSpeed backward per micro-batch, the optimiser step at the accumulation boundary. The masking
noise is drawn per global batch from (seed, epoch, step) and dropout is re-seeded from
(seed, epoch, step, rank), so a run is a pure function of its config and resumes exactly.

Legend: G global batch, B micro-batch, L tokens, M positions per item.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distributed_rec.artifacts import RunPaths
from distributed_rec.config import ConfigError, JobConfig
from distributed_rec.distributed import env
from distributed_rec.distributed.env import resolve_device

__all__ = ["Trainer", "resolve_device", "train_worker"]
from distributed_rec.errors import ArtifactError
from distributed_rec.model import build_mask_predictor, count_parameters
from distributed_rec.model.masking import draw_noise, draw_window_noise, noise_generator
from distributed_rec.model.objectives import Normalisers, TrainingObjective
from distributed_rec.model.vocab import encode_sequences, encode_windows
from distributed_rec.model.weights import dense_items_for
from distributed_rec.semantic_ids.id_table import SemanticIdTable
from distributed_rec.train import checkpoint, faults
from distributed_rec.train.data import (
    SampleSet,
    epoch_order,
    micro_batches,
    steps_per_epoch,
)
from distributed_rec.train.ds_config import deepspeed_config, resolve_precision
from distributed_rec.train.ds_ops import load_deepspeed_ops
from distributed_rec.train.early_stopping import EarlyStopping
from distributed_rec.train.optim import build_optimizer
from distributed_rec.train.reporting import Reporter
from distributed_rec.train.selection import spearman
from distributed_rec.train.streamed import StreamedSamples, open_samples, open_windows
from distributed_rec.train.validate import ValidationRunner

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """Where training is; saved in every checkpoint (all plain numbers)."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    samples: int = 0
    targets: int = 0
    tokens: int = 0
    train_seconds: float = 0.0
    train_cpu_seconds: float = 0.0
    last_loss: float | None = None
    finished: bool = False


def _item_codes(table: SemanticIdTable, samples: SampleSet | StreamedSamples) -> np.ndarray:
    """int64 [num_items, M] codes by item id; every trained item must have an ID."""
    used = samples.item_ids()
    num_items = int(max(table.item_ids.max(), used.max(initial=-1))) + 1
    codes = table.dense_codes(num_items)
    missing = used[codes[used, 0] < 0]
    if len(missing):
        raise ArtifactError(
            f"{len(missing)} training items have no semantic ID (e.g. item {int(missing[0])}); "
            "re-run the tokenize stage on the same prepare output"
        )
    return codes


def _dropout_seed(*key: int) -> int:
    return int(np.random.SeedSequence(list(key)).generate_state(1, np.uint32)[0])


class Trainer:
    """Everything one process holds while training: data, engine, progress, reporting."""

    def __init__(self, config: JobConfig) -> None:
        import deepspeed

        self.started = time.perf_counter()
        self.config, self.cfg = config, config.train
        self.device = resolve_device(config.device)
        self.dist = env.init_distributed(env.process_group_backend(self.device))
        if self.device == "cuda":
            torch.cuda.set_device(self.dist.local_rank)
        env.set_threads(self.dist.world_size)
        self.paths = RunPaths.of(config.run_dir)
        self._fetch_inputs()
        self.table = SemanticIdTable.read(self.paths.semantic_ids)
        self.max_items = config.data.max_history + 1
        self.whole_sequence = config.whole_sequence_training
        if self.whole_sequence:
            self.samples = open_windows(self.paths.train_windows, self.max_items)
        else:
            self.samples = open_samples(self.paths.train_split, config.data.max_history)
        self.item_codes = _item_codes(self.table, self.samples)
        self.epoch_steps = steps_per_epoch(len(self.samples), self.cfg.global_batch_size)
        if self.epoch_steps == 0:
            raise ConfigError(
                f"train.global_batch_size={self.cfg.global_batch_size} exceeds the "
                f"{len(self.samples)} training {'windows' if self.whole_sequence else 'samples'}"
            )
        self.total_steps = self.epoch_steps * self.cfg.max_epochs
        if self.cfg.max_steps:
            self.total_steps = min(self.total_steps, self.cfg.max_steps)

        torch.manual_seed(self.cfg.seed)
        model = build_mask_predictor(
            config.model,
            self.table.num_heads,
            self.table.codebook_size,
            self.max_items,
            dense_items_for(config, self.table),
            self.table.codes,
        )
        self.num_parameters = count_parameters(model)
        objective = TrainingObjective(model, config.model, self.whole_sequence).to(self.device)
        optimizer, scheduler = build_optimizer(objective, self.cfg, self.total_steps)
        load_deepspeed_ops()  # a build killed earlier must not hang deepspeed.initialize
        if self.cfg.resume:
            self._fetch(self.paths.checkpoints, self.paths.best_model.parent)
        saved_world = (
            checkpoint.saved_world_size(self.paths.checkpoints) if self.cfg.resume else None
        )
        self.resharding = saved_world is not None and saved_world != self.dist.world_size
        self.engine, _, _, _ = deepspeed.initialize(
            model=objective,
            optimizer=optimizer,
            lr_scheduler=scheduler,
            config=deepspeed_config(
                self.cfg, self.dist.world_size, self.device, load_universal=self.resharding
            ),
            dist_init_required=False,
        )
        checkpoint.make_loading_safe(self.engine)
        self.accumulation = self.engine.gradient_accumulation_steps()
        self.autocast_bf16 = (
            self.device == "cpu" and resolve_precision(self.cfg.precision, self.device) == "bf16"
        )
        self.progress, self.stopper = Progress(), EarlyStopping(self.cfg.patience)
        self.resumed_from_world_size: int | None = None
        if self.cfg.resume:
            self._resume()
        self.validator = ValidationRunner(
            config, self.paths, self.table, self.device, self.dist.is_main
        )
        self.tester = (
            ValidationRunner(config, self.paths, self.table, self.device, self.dist.is_main, "test")
            if self.cfg.report_test
            else None
        )
        self.reporter = Reporter(
            self.paths, self.dist.is_main, self.total_steps, self.progress.global_step
        )

    def _fetch_inputs(self) -> None:
        """The splits and semantic IDs every process reads (remote run directory)."""
        paths = self.paths
        split = paths.train_windows if self.config.whole_sequence_training else paths.train_split
        dense = [paths.item_embeddings] if self.config.model.dense_loss_weight > 0 else []
        self._fetch(paths.semantic_ids, split, *self._eval_splits(), *dense)

    def _eval_splits(self) -> list[Path]:
        """valid, and test when its metrics are reported beside validation (train.report_test)."""
        splits = ("valid", "test") if self.cfg.report_test else ("valid",)
        return [self.paths.eval_split(split) for split in splits]

    def _fetch(self, *folders: Path) -> None:
        """With a remote run directory, each machine's first process fetches `folders` into its
        mirror (in place already on the launching machine: only what differs is downloaded)."""
        if self.paths.remote is not None and self.dist.local_rank == 0:
            self.paths.fetch(*folders)
        env.barrier()

    def _resume(self) -> None:
        if checkpoint.latest_tag(self.paths.checkpoints) is None:
            log.warning("--resume: no checkpoint in %s, starting afresh", self.paths.checkpoints)
            return
        folder = self.paths.checkpoints
        tag = None
        if self.resharding:  # saved by another number of processes: re-shard
            tag = checkpoint.make_universal(folder, checkpoint.latest_tag(folder) or "")
        client = checkpoint.load(self.engine, folder, tag)
        if not self.resharding and int(client.get("world_size", -1)) != self.dist.world_size:
            raise ArtifactError(
                f"{folder}: saved with {client.get('world_size')} processes by a version that "
                f"cannot re-shard; resume with the same number (got {self.dist.world_size})"
            )
        self.progress = Progress(**client["progress"])
        self.resumed_from_world_size = int(client.get("world_size", self.dist.world_size))
        self.stopper = EarlyStopping.from_state(client["early_stopping"])
        log.info(
            "resumed at epoch %d, step %d (saved by %s processes, now %d)",
            self.progress.epoch,
            self.progress.global_step,
            client.get("world_size"),
            self.dist.world_size,
        )

    def save_checkpoint(self) -> None:
        client = {
            "progress": asdict(self.progress),
            "early_stopping": self.stopper.state(),
            "world_size": self.dist.world_size,
            "seed": self.cfg.seed,
        }
        tag = checkpoint.save(
            self.engine, self.paths.checkpoints, self.progress.global_step, client
        )
        self._publish_checkpoint(tag)

    def _publish_checkpoint(self, tag: str) -> None:
        """With a remote run directory: each machine's first process uploads its files of the
        new checkpoint; then rank 0 the best weights, TensorBoard events and the rest of the
        checkpoint folder with the marker that makes the new checkpoint current, and deletes
        from the bucket the checkpoints removed locally."""
        paths = self.paths
        if paths.remote is None:
            return
        if self.dist.local_rank == 0:
            paths.publish(paths.checkpoints / tag, delete=False)
        env.barrier()
        if self.dist.is_main:  # the marker goes up only once every machine's files are there
            self.reporter.flush()
            paths.publish(paths.best_model.parent, paths.tensorboard("train"))
            paths.publish(paths.checkpoints, delete=False)
            paths.prune(paths.checkpoints)
        env.barrier()

    def train_step(self, epoch: int, step: int, ids_G: np.ndarray) -> dict[str, float]:
        """One optimiser step on global batch `ids_G`; returns its loss terms (all processes)."""
        M, K, G = self.table.num_heads, self.table.codebook_size, len(ids_G)
        lengths_G = self.samples.lengths_of(ids_G)
        targets = int(self.samples.targets_of(ids_G).sum())
        norm = Normalisers(target_tokens=float(targets * M), real_tokens=float(lengths_G.sum() * M))
        draw = draw_window_noise if self.whole_sequence else draw_noise
        noise = draw(noise_generator(self.cfg.seed, epoch, step), G, self.max_items, M)
        torch.manual_seed(_dropout_seed(self.cfg.seed, epoch, step, self.dist.rank))
        sums: dict[str, torch.Tensor] = {}
        shares = micro_batches(
            ids_G, lengths_G, self.cfg.micro_batch_size, self.dist.rank, self.dist.world_size
        )
        encode = encode_windows if self.whole_sequence else encode_sequences
        for micro in shares:
            tokens, pad_or_lengths = encode(
                self.samples.sequences(micro.sample_ids), self.item_codes, K
            )
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast_bf16):
                terms = self.engine(
                    tokens.to(self.device),
                    pad_or_lengths.to(self.device),
                    noise.rows(micro.rows),
                    norm,
                )
            # DeepSpeed divides by the accumulation steps and averages over processes; the terms
            # are already sums over the global batch, so undo both.
            self.engine.backward(terms["loss"] * (self.accumulation * self.dist.world_size))
            self.engine.step()
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + value.detach().float().cpu()
        names = sorted(sums)
        totals = env.all_reduce_sum(torch.stack([sums[n] for n in names]))
        return {n: float(v) for n, v in zip(names, totals, strict=True)}

    def run_epoch(self, stop_after_step: int | None) -> bool:
        """Train the rest of the current epoch; False when stopped by `stop_after_step`."""
        progress, cfg = self.progress, self.cfg
        G = cfg.global_batch_size
        order = epoch_order(len(self.samples), cfg.seed, progress.epoch)
        for step in range(progress.step_in_epoch, self.epoch_steps):
            faults.maybe_kill(self.dist.rank, progress.global_step)
            wall, cpu = time.perf_counter(), time.process_time()
            ids_G = order[step * G : (step + 1) * G]
            losses = self.train_step(progress.epoch, step, ids_G)
            tokens = int(self.samples.lengths_of(ids_G).sum()) * self.table.num_heads
            targets = int(self.samples.targets_of(ids_G).sum())
            progress.global_step += 1
            progress.step_in_epoch = step + 1
            progress.samples += G
            progress.targets += targets
            progress.tokens += tokens
            progress.last_loss = losses["loss"]
            progress.train_seconds += time.perf_counter() - wall
            progress.train_cpu_seconds += time.process_time() - cpu
            self.reporter.step(
                progress.global_step,
                losses,
                lr=float(self.engine.get_lr()[0]),
                grad_norm=self.engine.get_global_grad_norm(),
                samples=G,
                targets=targets,
                tokens=tokens,
                seconds=time.perf_counter() - wall,
                log_every=cfg.log_every_steps,
            )
            every = cfg.checkpoint_every_steps
            stopping = stop_after_step is not None and progress.global_step >= stop_after_step
            if (every and progress.global_step % every == 0) or stopping:
                self.save_checkpoint()
            if stopping:
                return False
            if progress.global_step >= self.total_steps:
                break
        return True

    def end_epoch(self) -> None:
        """Validate when due, keep the best weights, decide on early stopping."""
        progress = self.progress
        progress.epoch += 1
        progress.step_in_epoch = 0
        if progress.epoch % self.cfg.eval_every_epochs:
            return
        metrics = self.validator.run(self.engine)
        test_metrics = self.tester.run(self.engine) if self.tester is not None else None
        if self.stopper.update(metrics[self.cfg.monitor], progress.epoch, metrics, test_metrics):
            self.validator.save_best(self.engine)
        self.reporter.validation(progress.global_step, metrics, self.stopper.best)
        if test_metrics is not None:
            self.reporter.test_report(progress.global_step, test_metrics)
        progress.finished = self.stopper.should_stop

    def summary(self) -> dict[str, Any]:
        progress = self.progress
        history = self.stopper.history
        reported = [h for h in history if "test" in h]
        monitor = self.cfg.monitor
        return {
            "validation_history": history,
            "valid_test_spearman": (
                spearman(
                    [h["valid"][monitor] for h in reported], [h["test"][monitor] for h in reported]
                )
                if reported
                else None
            ),
            "best_metrics": self.stopper.best_metrics,
            "best_epoch": self.stopper.best_epoch,
            "monitor": self.cfg.monitor,
            "stopped_early": self.stopper.should_stop,
            "epochs_run": progress.epoch,
            "steps": progress.global_step,
            "last_loss": progress.last_loss,
            "tokens_per_s": progress.tokens / max(progress.train_seconds, 1e-9),
            "samples_per_s": progress.samples / max(progress.train_seconds, 1e-9),
            # next-item targets: one per prefix sample, one per item after the first of a window
            "targets_per_s": progress.targets / max(progress.train_seconds, 1e-9),
            "whole_sequence": self.whole_sequence,
            "train_seconds": progress.train_seconds,
            # CPU time of rank 0's training steps (all its threads): throughput per CPU-second
            # is the figure to compare on a machine shared with other work
            "samples_per_cpu_s": progress.samples / max(progress.train_cpu_seconds, 1e-9),
            "seconds": time.perf_counter() - self.started,
            "num_parameters": self.num_parameters,
            "world_size": self.dist.world_size,
            "resumed_from_world_size": self.resumed_from_world_size,
            "global_batch_size": self.cfg.global_batch_size,
            "micro_batch_size": self.cfg.micro_batch_size,
            "gradient_accumulation_steps": self.accumulation,
            "zero_stage": self.cfg.zero_stage,
            "device": self.device,
        }


def train_worker(config: JobConfig, stop_after_step: int | None = None) -> dict[str, Any]:
    """Train on this process's share; rank 0 writes the metrics, TensorBoard, best weights.

    `stop_after_step` ends the run right after that step's checkpoint, as a killed run would
    (tests of resume); otherwise training ends at early stopping, max_epochs or max_steps.
    """
    trainer = Trainer(config)
    try:
        return _train(trainer, config, stop_after_step)
    finally:
        trainer.reporter.close()  # the TensorBoard events reach their file on every way out


def _train(trainer: Trainer, config: JobConfig, stop_after_step: int | None) -> dict[str, Any]:
    progress = trainer.progress
    trainer.engine.train()
    while not progress.finished:
        if progress.epoch >= config.train.max_epochs or progress.global_step >= trainer.total_steps:
            progress.finished = True
            break
        if not trainer.run_epoch(stop_after_step):
            return {"stopped_at_step": progress.global_step}
        if progress.step_in_epoch >= trainer.epoch_steps:
            trainer.end_epoch()
        if progress.global_step >= trainer.total_steps or progress.epoch >= config.train.max_epochs:
            progress.finished = True
        trainer.save_checkpoint()
    if trainer.stopper.best_epoch == 0:
        trainer.validator.save_best(trainer.engine)  # never validated: keep the final weights
    summary = trainer.summary()
    trainer.reporter.finish(summary)
    paths = trainer.paths
    if paths.remote is not None and trainer.dist.is_main:  # rank 0 may be on another machine
        paths.publish(paths.best_model.parent, paths.tensorboard("train"), paths.train_metrics)
    return summary
