"""`python -m distributed_rec.reproduce.decode_study`: decoding variants of one trained run on
the validation split, side by side."""

from __future__ import annotations

import json

import pytest
from eval_support import NUM_USERS, build_run_dir, eval_config, eval_overrides

from distributed_rec.config import ConfigError, load_config
from distributed_rec.reproduce.decode_study import main, parse_variant, variant_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DENSE = (
    "--model.attention=inter_item_causal",
    "--model.dense_loss_weight=1",
    "--model.dense_learned_keys=true",
    "--model.catalog_loss_weight=1",
    "--decode.ranking=hybrid",
)


def test_parse_variant_and_its_errors():
    assert parse_variant("decode.steps=1, decode.beam_size=100") == {
        "steps": "1",
        "beam_size": "100",
    }
    for bad in ("steps=1", "model.d_model=8", "decode.steps"):
        with pytest.raises(ConfigError, match="expected decode.<key>=<value>"):
            parse_variant(bad)


def test_variants_are_checked_against_the_runs_own_model():
    plain = ["--model.dense_loss_weight=0", "--decode.ranking=generative"]
    with_dense = ["--model.dense_loss_weight=1", "--decode.ranking=hybrid"]
    guided = variant_config(load_config(None, with_dense), {"dense_prior_weight": "0.5"})
    assert guided.decode.dense_prior_weight == 0.5 and guided.model.dense_loss_weight == 1
    with pytest.raises(ConfigError, match="dense_prior_weight > 0 guides the beam"):
        variant_config(load_config(None, plain), {"dense_prior_weight": "0.5"})
    with pytest.raises(ConfigError, match="decode.beam_size"):
        variant_config(load_config(None, with_dense), {"beam_size": "many"})


def test_study_decodes_each_variant_of_a_dense_model(tmp_path):
    build_run_dir(eval_config(tmp_path, *DENSE))
    out = tmp_path / "out"
    argv = [*eval_overrides(tmp_path), *DENSE, f"--output={out}"]
    variants = ["--variant=decode.steps=1", "--variant=decode.steps=4,decode.beam_size=30"]
    assert main([*argv, *variants]) == 0
    result = json.loads((out / "decode_study.json").read_text())
    assert result["split"] == "valid" and result["users"] == NUM_USERS
    names = [row["variant"] for row in result["rows"]]
    assert names == ["the run's decode", "steps=1", "steps=4, beam_size=30"]
    for row in result["rows"]:
        assert set(row) >= {"generative", "dense", "hybrid", "hybrid_weight", "valid_by_weight"}
        # w = 1 is on the grid and gives the dense list: the chosen w is never worse on valid
        assert row["hybrid"]["ndcg@10"] >= row["dense"]["ndcg@10"]
        assert row["valid_by_weight"]["1"] == pytest.approx(row["dense"]["ndcg@10"])
    # the dense list does not depend on the beam search
    assert len({json.dumps(row["dense"], sort_keys=True) for row in result["rows"]}) == 1
    # with as many beams as items, T = 4 is exhaustive, hence a different list than B = 5
    assert result["rows"][2]["generative"] != result["rows"][0]["generative"]
    table = (out / "decode_study.md").read_text()
    assert table.count("\n| ") == 4 and "| steps=1 |" in table


def test_study_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="--run_dir"):
        main(["--variant=decode.steps=1"])
    with pytest.raises(ConfigError, match="--split='train'"):
        main([f"--run_dir={tmp_path}", "--split=train"])
    with pytest.raises(ConfigError, match="decode.steps=3"):
        build_run_dir(eval_config(tmp_path))
        main([*eval_overrides(tmp_path), "--variant=decode.steps=3"])
