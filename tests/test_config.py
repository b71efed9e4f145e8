import json

import pytest

from distributed_rec.cli import main, split_arguments
from distributed_rec.config import (
    ConfigError,
    JobConfig,
    config_from_dict,
    load_config,
    parse_overrides,
    save_config,
)


def test_defaults_are_the_reference_settings():
    config = JobConfig()
    assert config.tokenize.num_heads == 4
    assert config.tokenize.codebook_size == 256
    assert config.tokenize.code_dim == 32
    assert config.tokenize.beta == 0.25
    assert config.model.d_model == 256
    assert config.train.global_batch_size == 1024
    assert config.decode.beam_size == 50
    assert config.data.max_history == 20


def test_cli_override_beats_recipe_which_beats_default(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[train]\nlr = 0.5\nmax_epochs = 7\n[data]\nformat = "synthetic"\n')
    config = load_config(str(recipe), ["--train.lr=0.25", "--run_dir", "x"])
    assert config.train.lr == 0.25
    assert config.train.max_epochs == 7
    assert config.train.micro_batch_size == JobConfig().train.micro_batch_size
    assert config.data.format == "synthetic"
    assert config.run_dir == "x"


def test_values_are_coerced_by_type():
    config = load_config(
        None,
        ["--data.text_fields=title,brand", "--train.resume=yes", "--tokenize.codebook_size=1_024"],
    )
    assert config.data.text_fields == ["title", "brand"]
    assert config.train.resume is True
    assert config.tokenize.codebook_size == 1024


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("--train.nope=1", "unknown config key 'train.nope'"),
        ("--nosection.key=1", "unknown config key 'nosection'"),
        ("--train.lr=fast", "train.lr expects a number, got 'fast'"),
        ("--train.max_epochs=1.5", "train.max_epochs expects an integer"),
        ("--train.resume=maybe", "train.resume expects true or false"),
        ("--data.format=parquetish", "data.format='parquetish' is not one of"),
        ("--train.zero_stage=4", "train.zero_stage=4 must be 0, 1, 2 or 3"),
        ("--model.num_attention_heads=7", "must be divisible by model.num_attention_heads=7"),
        ("--decode.steps=3", "decode.steps=3 must divide tokenize.num_heads=4"),
        ("--train", "has no value"),
        ("--data.format=lcrec", "data.path is required for data.format='lcrec'"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_config(None, [override])


def test_recipe_with_unknown_key_is_rejected(tmp_path):
    recipe = tmp_path / "bad.toml"
    recipe.write_text("[model]\nlayers = 3\n")
    with pytest.raises(ConfigError, match="unknown config key 'model.layers'"):
        load_config(str(recipe))


def test_unknown_recipe_name_lists_known_ones():
    with pytest.raises(ConfigError, match="debug"):
        load_config("no-such-recipe")


def test_named_recipes_load():
    assert load_config("debug").data.format in ("embedded", "synthetic")
    assert load_config("default").data.format == "embedded"


def test_saved_config_round_trips(tmp_path):
    config = load_config("debug", ["--train.lr=0.01"])
    save_config(config, tmp_path / "config.json")
    restored = config_from_dict(json.loads((tmp_path / "config.json").read_text()))
    assert restored == config


def test_parse_overrides_nests_keys():
    assert parse_overrides(["--a.b=1", "--a.c", "2", "--d=3"]) == {
        "a": {"b": "1", "c": "2"},
        "d": "3",
    }


def test_cli_contract_parses_config_forms():
    assert split_arguments(["train", "--config=debug", "--resume"]) == (
        "train",
        "debug",
        False,
        ["--train.resume=true"],
    )
    assert split_arguments(["run", "--config", "x.toml", "--force"])[1:3] == ("x.toml", True)


def test_cli_reports_bad_input_without_traceback(capsys):
    assert main(["prepare", "--data.format=bogus"]) == 2
    assert main(["nostage"]) == 2
    err = capsys.readouterr().err
    assert "data.format='bogus'" in err
    assert "unknown stage 'nostage'" in err
    assert "Traceback" not in err


def test_block_diffusion_switches_resolve_against_the_attention():
    default = load_config(None, [])
    assert not default.whole_sequence_training and not default.cached_decoding
    block = load_config(None, ["--model.attention=inter_item_causal"])
    assert block.whole_sequence_training and block.cached_decoding
    causal = load_config(None, ["--model.attention=causal"])
    assert not causal.whole_sequence_training and causal.cached_decoding
    off = load_config(
        None,
        [
            "--model.attention=inter_item_causal",
            "--train.whole_sequence=false",
            "--decode.cache_history=off",
        ],
    )
    assert not off.whole_sequence_training and not off.cached_decoding
    assert off.train.whole_sequence == "false" and off.decode.cache_history == "false"


@pytest.mark.parametrize(
    ("override", "key"),
    [("--train.whole_sequence=true", "train.whole_sequence"),
     ("--decode.cache_history=true", "decode.cache_history")],
)  # fmt: skip
def test_block_diffusion_switches_are_errors_where_not_exact(override, key):
    with pytest.raises(ConfigError, match=rf"{key}=true is exact only with model.attention"):
        load_config(None, [override])  # bidirectional: every item attends the target
    with pytest.raises(ConfigError, match=rf"{key} expects auto, true or false"):
        load_config(None, [f"--{key}=maybe"])


def test_block_diffusion_switches_accept_toml_booleans(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        '[model]\nattention = "inter_item_causal"\n[train]\nwhole_sequence = false\n'
        "[decode]\ncache_history = true\n"
    )
    config = load_config(str(recipe))
    assert not config.whole_sequence_training and config.cached_decoding


def float_keys() -> list[str]:
    """Every float key of the config, as section.key (or key)."""
    import dataclasses
    import typing

    keys = []
    for section in dataclasses.fields(JobConfig):
        cls = typing.get_type_hints(JobConfig)[section.name]
        if dataclasses.is_dataclass(cls):
            hints = typing.get_type_hints(cls)
            keys += [
                f"{section.name}.{f.name}"
                for f in dataclasses.fields(cls)
                if hints[f.name] is float
            ]
        elif cls is float:
            keys.append(section.name)
    return keys


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN", "1e999"])
def test_nan_and_inf_are_rejected_for_every_float_key(value):
    keys = float_keys()
    assert "train.lr" in keys and len(keys) >= 15
    for key in keys:
        with pytest.raises(ConfigError, match=rf"^{key} expects a finite number, got '{value}'$"):
            load_config(None, [f"--{key}={value}"])


def test_nan_in_recipe_files_is_rejected(tmp_path):
    (tmp_path / "r.toml").write_text("[train]\nlr = nan\n")
    with pytest.raises(ConfigError, match=r"^train.lr expects a finite number, got nan$"):
        load_config(str(tmp_path / "r.toml"))
    (tmp_path / "r.json").write_text('{"tokenize": {"beta": Infinity}}')
    with pytest.raises(ConfigError, match=r"^tokenize.beta expects a finite number, got inf$"):
        load_config(str(tmp_path / "r.json"))


def test_json_recipe_must_be_an_object_of_sections(tmp_path, capsys):
    recipe = tmp_path / "r.json"
    recipe.write_text('[{"train": {"lr": 0.1}}]')
    message = (
        f"{recipe}: a recipe must be a table/object of sections and keys "
        '(e.g. {"train": {"lr": 0.001}}), got a list'
    )
    with pytest.raises(ConfigError) as err:
        load_config(str(recipe), ["--train.lr=0.2"])
    assert str(err.value) == message
    assert main(["prepare", f"--config={recipe}"]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    recipe.write_text('{"train": 5}')
    with pytest.raises(ConfigError) as err:
        load_config(str(recipe), ["--train.lr=0.2"])  # the override must not hide the bad section
    assert str(err.value) == f"{recipe}: train is a section; it must hold keys, got a number"
    recipe.write_text('{"train": {"lr": 0.1, "max_epochs": 3, "lr": 0.2}}')
    with pytest.raises(ConfigError) as err:
        load_config(str(recipe))
    assert str(err.value) == f"{recipe}: cannot parse recipe: key 'lr' appears twice"


def test_config_file_without_recipe_suffix(tmp_path):
    plain = tmp_path / "recipe.txt"
    plain.write_text("[train]\nlr = 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(plain))
    assert str(err.value) == (
        f"--config={str(plain)!r} is a file but not a .toml or .json file; "
        "rename it to end in .toml or .json"
    )
    with pytest.raises(ConfigError, match=r"is a folder, not a \.toml or \.json file$"):
        load_config(str(tmp_path))


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_run_dir_that_is_a_file_is_an_error_before_anything_is_written(tmp_path, capsys, where):
    blocker = tmp_path / "taken"
    blocker.write_text("not a folder\n")
    run_dir = blocker if where == "file" else blocker / "run"
    assert main(["prepare", f"--run_dir={run_dir}"]) == 2
    err = capsys.readouterr().err
    if where == "file":
        expected = (
            f"error: run_dir={str(run_dir)!r} is a file, not a folder; choose another --run_dir\n"
        )
    else:
        expected = (
            f"error: run_dir={str(run_dir)!r} is under {blocker}, which is a file, not a folder; "
            "choose another --run_dir\n"
        )
    assert err.endswith(expected) and "Traceback" not in err
    assert blocker.read_text() == "not a folder\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_run_dir_that_cannot_be_written_is_an_error(tmp_path, monkeypatch, capsys):
    import distributed_rec.config as config_module

    # the tests run as root, who may write anywhere: stand in for a read-only folder
    monkeypatch.setattr(config_module.os, "access", lambda path, mode: False)
    assert main(["prepare", f"--run_dir={tmp_path / 'run'}"]) == 2
    assert capsys.readouterr().err.endswith(
        f"error: run_dir={str(tmp_path / 'run')!r}: {tmp_path} is not writable by this user; "
        "choose another --run_dir\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_section_hash_covers_top_level_fields_such_as_the_seed():
    base, other = load_config(None, []), load_config(None, ["--seed=1"])
    assert base.section_hash("data", "baseline") == other.section_hash("data", "baseline")
    assert base.section_hash("data", "baseline", "seed") != other.section_hash(
        "data", "baseline", "seed"
    )
    assert base.section_hash("seed") == load_config(None, ["--seed=0"]).section_hash("seed")
