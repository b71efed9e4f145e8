"""SASRec and TIGER-style baselines: shapes, learning, constrained beam search, the stage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from distributed_rec.baselines.layers import CausalTransformer
from distributed_rec.baselines.sasrec import SASRec
from distributed_rec.baselines.stage import run_baseline
from distributed_rec.baselines.tiger import TigerDecoder, TigerRecommender
from distributed_rec.baselines.tiger_search import PrefixTrie, constrained_beam_search
from distributed_rec.baselines.train import fit
from distributed_rec.cli import main
from distributed_rec.config import ConfigError, JobConfig, load_config, replace_section
from distributed_rec.errors import ArtifactError
from distributed_rec.evaluate.metrics import METRIC_KEYS
from distributed_rec.semantic_ids.id_table import SemanticIdTable
from distributed_rec.train.data import SampleSet

NUM_ITEMS, NUM_USERS, SEQ_LEN, M, K = 20, 30, 8, 3, 4


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cyclic_sequences() -> list[list[int]]:
    """User u sees items u, u+1, ... (mod N): the next item is always the previous one + 1."""
    return [[(u + i) % NUM_ITEMS for i in range(SEQ_LEN)] for u in range(NUM_USERS)]


def sample_set(sequences: list[list[int]], max_history: int) -> SampleSet:
    """Every prefix (history -> target) of each sequence, histories truncated."""
    rows = [s[max(0, i - max_history) : i + 1] for s in sequences for i in range(1, len(s))]
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    return SampleSet(offsets=offsets, items=np.concatenate(rows).astype(np.int64))


def random_table(num_items: int, seed: int = 0) -> SemanticIdTable:
    """Unique random M-tuples over K codes for items 0..num_items-1."""
    flat = np.random.default_rng(seed).permutation(K**M)[:num_items]
    codes = np.stack([(flat // K ** (M - 1 - m)) % K for m in range(M)], axis=1)
    return SemanticIdTable(np.arange(num_items, dtype=np.int64), codes.astype(np.int64), K)


def test_causal_transformer_ignores_later_tokens_and_padding() -> None:
    torch.manual_seed(0)
    model = CausalTransformer(8, num_layers=2, num_heads=2, dropout=0).eval()
    x = torch.randn(1, 6, 8)
    no_pad = torch.zeros(1, 6, dtype=torch.bool)
    with torch.no_grad():
        full = model(x, no_pad)
        torch.testing.assert_close(model(x[:, :4], no_pad[:, :4]), full[:, :4])
        padded = torch.cat([torch.randn(1, 3, 8), x], dim=1)
        is_pad = torch.tensor([[True] * 3 + [False] * 6])
        torch.testing.assert_close(model(padded, is_pad)[:, 3:], full)


# --- SASRec ----------------------------------------------------------------------------------


def test_sasrec_shapes_and_history_exclusion() -> None:
    torch.manual_seed(0)
    model = SASRec(5, max_history=4, d_model=8, num_layers=1, num_attention_heads=2, dropout=0)
    model.eval()
    assert model(torch.tensor([[5, 5, 1, 2], [0, 1, 2, 3]])).shape == (2, 5)
    ranked = model.recommend([[1, 2], [0, 1, 2, 3]], top_k=4)
    assert ranked.shape == (2, 4)
    assert sorted(ranked[0, :3]) == [0, 3, 4]  # 3 unseen items, then an empty slot
    assert ranked[0, 3] == -1
    assert ranked[1, 0] == 4 and (ranked[1, 1:] == -1).all()
    with pytest.raises(ValueError, match="max_history=4"):
        model(torch.zeros(1, 5, dtype=torch.int64))


def test_sasrec_learns_a_predictable_next_item() -> None:
    torch.manual_seed(0)
    sequences = cyclic_sequences()
    samples = sample_set([s[:-1] for s in sequences], max_history=4)
    valid = ([np.array(s[-5:-1]) for s in sequences], np.array([s[-1] for s in sequences]))
    model = SASRec(NUM_ITEMS, 4, d_model=16, num_layers=1, num_attention_heads=2, dropout=0)
    result = fit(
        model,
        samples,
        valid,
        lr=1e-2,
        batch_size=32,
        max_epochs=15,
        patience=15,
        top_k=10,
        seed=0,
        eval_batch_size=64,
    )
    losses = [row["loss"] for row in result.epochs]
    assert losses[-1] < 0.25 * losses[0]
    assert result.best_valid["recall@1"] == 1.0


def test_sasrec_whole_sequence_loss_equals_one_pass_per_prefix() -> None:
    """Every position of one causal pass over a window scores the next item exactly as the
    model scores that prefix alone at inference (positions counted from the first item)."""
    torch.manual_seed(0)
    model = SASRec(12, max_history=5, d_model=8, num_layers=2, num_attention_heads=2, dropout=0,
                   whole_sequence=True).eval()  # fmt: skip
    windows = [np.array([3, 1, 4, 7, 5, 9]), np.array([2, 6, 8])]
    terms = []
    with torch.no_grad():
        for window in windows:
            for end in range(1, len(window)):
                # a prefix decoded beside a longer one is left-padded: same logits
                logits = model(torch.tensor([[12] * (5 - end) + list(window[:end])]))
                terms.append(torch.nn.functional.cross_entropy(logits, torch.tensor([window[end]])))
        whole = model.loss(windows)
    assert float(whole) == pytest.approx(float(torch.stack(terms).mean()), rel=1e-5)
    per_prefix = SASRec(12, 5, 8, 2, 2, 0)  # positions from the end: a different model
    per_prefix.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert not torch.allclose(
            per_prefix(torch.tensor([[3, 1, 4]])), model(torch.tensor([[3, 1, 4]]))
        )


def test_sasrec_learns_a_predictable_next_item_from_windows() -> None:
    torch.manual_seed(0)
    sequences = cyclic_sequences()
    windows = [s[:-2] for s in sequences]  # prepare's windows: the training items of each user
    offsets = np.concatenate([[0], np.cumsum([len(w) for w in windows])]).astype(np.int64)
    samples = SampleSet(offsets=offsets, items=np.concatenate(windows).astype(np.int64),
                        windows=True)  # fmt: skip
    valid = ([np.array(s[-6:-2]) for s in sequences], np.array([s[-2] for s in sequences]))
    model = SASRec(NUM_ITEMS, 6, d_model=16, num_layers=1, num_attention_heads=2, dropout=0,
                   whole_sequence=True)  # fmt: skip
    result = fit(model, samples, valid, lr=1e-2, batch_size=4, max_epochs=15, patience=15,
                 top_k=10, seed=0, eval_batch_size=64)  # fmt: skip
    assert result.best_valid["recall@1"] == 1.0


# --- TIGER constrained beam search ------------------------------------------------------------


def test_prefix_trie_allows_only_extensions_of_real_ids() -> None:
    codes = np.array([[0, 1, 2], [0, 1, 3], [2, 0, 0]])
    trie = PrefixTrie(SemanticIdTable(np.array([7, 8, 9]), codes, K))
    assert trie.allowed_next(torch.zeros(1, 0, dtype=torch.int64)).tolist() == [
        [True, False, True, False]
    ]
    allowed = trie.allowed_next(torch.tensor([[0, 1], [2, 0], [1, 1]]))
    assert allowed.tolist() == [
        [False, False, True, True],
        [True, False, False, False],
        [False, False, False, False],
    ]
    assert trie.items_of(torch.tensor([[0, 1, 3], [2, 0, 0], [0, 1, 0]])).tolist() == [8, 9, -1]


def tiny_decoder(seed: int = 0) -> TigerDecoder:
    torch.manual_seed(seed)
    decoder = TigerDecoder(
        M, K, max_history=3, d_model=16, num_layers=2, num_attention_heads=2, dropout=0
    )
    for p in decoder.parameters():  # larger weights than the init: distinct, spread-out scores
        torch.nn.init.normal_(p, std=0.5)
    return decoder.eval()


def brute_force_scores(decoder: TigerDecoder, history_1H: torch.Tensor, table) -> torch.Tensor:
    """float [N]: the joint log-probability of every item's ID, teacher-forced."""
    codes_NM = torch.as_tensor(table.codes)
    logits = decoder.target_logits(history_1H.expand(len(codes_NM), -1), codes_NM)
    return torch.log_softmax(logits, -1).gather(2, codes_NM[:, :, None]).sum((1, 2))


def test_beam_search_wide_beam_is_exact_top_k() -> None:
    table = random_table(12)
    decoder, trie = tiny_decoder(), PrefixTrie(table)
    recommender = TigerRecommender(table, 12, decoder, beam_size=12)
    histories = [[3, 5], [0, 1, 2], [11]]
    history_BH = recommender.history_tokens(histories)
    with torch.no_grad():
        items_BR, scores_BR = constrained_beam_search(decoder, history_BH, trie, beam_size=12)
        for row in range(len(histories)):
            exact = brute_force_scores(decoder, history_BH[row : row + 1], table)
            order = torch.argsort(exact, descending=True)
            assert items_BR[row].tolist() == table.item_ids[order.numpy()].tolist()
            torch.testing.assert_close(scores_BR[row], exact[order], atol=1e-4, rtol=1e-4)
    top = recommender.recommend(histories, top_k=5)  # the user's own history is skipped
    for row, beams, history in zip(top.tolist(), items_BR.tolist(), histories, strict=True):
        assert row == [i for i in beams if i not in history][:5]


def test_beam_search_narrow_beam_returns_distinct_real_items() -> None:
    table = random_table(12, seed=1)
    decoder, trie = tiny_decoder(seed=1), PrefixTrie(table)
    history_BH = TigerRecommender(table, 12, decoder, 4).history_tokens([[1], [2, 9, 4]])
    items_BR, scores_BR = constrained_beam_search(decoder, history_BH, trie, beam_size=4)
    assert items_BR.shape == (2, 4)
    for row in items_BR.tolist():
        assert len(set(row)) == 4 and set(row) <= set(range(12))
    assert (scores_BR[:, :-1] >= scores_BR[:, 1:]).all()
    # more beams than items: the slots past the 3 real items stay empty
    small = SemanticIdTable(np.arange(3), table.codes[:3], K)
    items, scores = constrained_beam_search(decoder, history_BH[:, -3:], PrefixTrie(small), 10)
    assert sorted(items[0, :3].tolist()) == [0, 1, 2] and (items[:, 3:] == -1).all()
    assert torch.isinf(scores[:, 3:]).all()


# --- the stage end to end --------------------------------------------------------------------


def _write_split(path: Path, histories: list, targets: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "user_id": pa.array(range(len(targets)), pa.int64()),
            "history": pa.array(histories, pa.list_(pa.int64())),
            "target": pa.array(targets, pa.int64()),
        }
    )
    pq.write_table(table, path)


def build_run_dir(root: Path, max_history: int) -> None:
    sequences = cyclic_sequences()
    prepare = root / "prepare"
    prepare.mkdir(parents=True)
    items = {
        "item_id": pa.array(range(NUM_ITEMS), pa.int64()),
        "raw_item_id": [f"i{i}" for i in range(NUM_ITEMS)],
        "text": [f"item {i}" for i in range(NUM_ITEMS)],
    }
    pq.write_table(pa.table(items), prepare / "items.parquet")
    rows = [
        (s[max(0, i - max_history) : i], s[i]) for s in sequences for i in range(1, SEQ_LEN - 2)
    ]
    _write_split(
        prepare / "splits" / "train" / "part-00000.parquet", *map(list, zip(*rows, strict=False))
    )
    for split, end in (("valid", SEQ_LEN - 2), ("test", SEQ_LEN - 1)):
        _write_split(
            prepare / "splits" / f"{split}.parquet",
            [s[max(0, end - max_history) : end] for s in sequences],
            [s[end] for s in sequences],
        )
    random_table(NUM_ITEMS).write(root / "tokenize" / "semantic_ids.parquet")


def stage_config(root: Path, model: str) -> JobConfig:
    return load_config(
        None,
        [
            f"--run_dir={root}",
            "--device=cpu",
            "--data.max_history=4",
            f"--baseline.model={model}",
            "--baseline.d_model=16",
            "--baseline.num_layers=1",
            "--baseline.dropout=0",
            "--baseline.lr=1e-2",
            "--baseline.batch_size=32",
            "--baseline.max_epochs=12",
            "--baseline.patience=3",
            "--baseline.beam_size=12",
            "--tokenize.method=rqvae",
        ],
    )


@pytest.mark.timeout(120)
@pytest.mark.parametrize("model", ["sasrec", "tiger"])
def test_stage_end_to_end(tmp_path: Path, model: str) -> None:
    build_run_dir(tmp_path, max_history=4)
    summary = run_baseline(stage_config(tmp_path, model))
    written = json.loads((tmp_path / "baselines" / model / "metrics.json").read_text())
    assert set(written["valid"]) == set(written["test"]) == set(METRIC_KEYS)
    assert written["valid"] == summary["valid"] and written["test"] == summary["test"]
    assert written["users"] == {"valid": NUM_USERS, "test": NUM_USERS}
    assert written["epochs_run"] == len(written["history"]) <= 12
    assert written["best_epoch"] == max(
        range(written["epochs_run"]), key=lambda e: (written["history"][e]["valid/ndcg@10"], -e)
    )
    # the next item is always the previous + 1: both baselines find it for most test users
    assert written["test"]["recall@10"] >= 0.8, written["test"]


@pytest.mark.timeout(120)
def test_stage_trains_sasrec_on_the_training_windows(tmp_path: Path) -> None:
    build_run_dir(tmp_path, max_history=4)
    windows = [s[max(0, end - 5) : end] for s in cyclic_sequences() for end in (SEQ_LEN - 2,)]
    folder = tmp_path / "prepare" / "splits" / "train_windows"
    folder.mkdir(parents=True)
    table = pa.table({"user_id": pa.array(range(NUM_USERS), pa.int64()),
                      "items": pa.array(windows, pa.list_(pa.int64()))})  # fmt: skip
    pq.write_table(table, folder / "part-00000.parquet")
    config = replace_section(stage_config(tmp_path, "sasrec"), "baseline", whole_sequence=True,
                             batch_size=4)  # fmt: skip
    run_baseline(config)
    written = json.loads((tmp_path / "baselines" / "sasrec" / "metrics.json").read_text())
    assert written["test"]["recall@10"] >= 0.8, written["test"]
    (folder / "part-00000.parquet").unlink()  # it reads the windows, not the prefixes
    with pytest.raises(ArtifactError, match="train_windows"):
        run_baseline(config)


@pytest.mark.timeout(120)
def test_epochs_are_selected_on_a_fixed_sample_of_validation_users(tmp_path: Path) -> None:
    build_run_dir(tmp_path, max_history=4)
    config = replace_section(stage_config(tmp_path, "sasrec"), "baseline", valid_max_users=10)
    config = replace_section(config, "baseline", max_epochs=2)
    run_baseline(config)
    written = json.loads((tmp_path / "baselines" / "sasrec" / "metrics.json").read_text())
    assert written["valid_users_for_selection"] == 10
    assert written["users"] == {"valid": NUM_USERS, "test": NUM_USERS}


def test_tiger_needs_semantic_ids(tmp_path: Path) -> None:
    build_run_dir(tmp_path, max_history=4)
    (tmp_path / "tokenize" / "semantic_ids.parquet").unlink()
    with pytest.raises(ArtifactError, match="run the tokenize stage"):
        run_baseline(stage_config(tmp_path, "tiger"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("--baseline.model=gru4rec", "baseline.model='gru4rec'"),
        ("--baseline.d_model=10", "baseline.d_model=10 must be divisible"),
        ("--baseline.beam_size=0", "baseline.beam_size=0 must be > 0"),
        ("--baseline.dropout=1", "baseline.dropout=1.0 must be in"),
    ],
)
def test_baseline_config_validation(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(None, ["--baseline.num_attention_heads=4", override])


@pytest.mark.timeout(120)
def test_cli_baseline_stage_runs_then_skips(tmp_path: Path, capsys) -> None:
    build_run_dir(tmp_path, max_history=4)
    args = ["baseline", f"--run_dir={tmp_path}", "--device=cpu", "--data.max_history=4"]
    args += ["--baseline.d_model=16", "--baseline.num_layers=1", "--baseline.max_epochs=2"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)[0]
    assert first["stage"] == "baseline" and not first["skipped"] and first["model"] == "sasrec"
    assert set(first["test"]) == set(METRIC_KEYS)
    assert (tmp_path / "baselines" / "sasrec" / "metrics.json").exists()
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)[0]["skipped"] is True
    assert main(["nostage"]) == 2
    assert "run, baseline" in capsys.readouterr().err
