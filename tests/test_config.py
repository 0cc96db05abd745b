from pathlib import Path

import pytest

from bpbreid.config import (
    Config,
    ConfigError,
    apply_overrides,
    canonical_embedding,
    config_diff,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)


def test_defaults_follow_the_paper():
    cfg = Config()
    assert cfg.model.bpbreid.dim_reduce_output == 512
    assert cfg.model.bpbreid.test_embeddings == ["bn_foreground", "parts"]
    assert cfg.loss.pixel_weight == pytest.approx(0.35)
    assert cfg.loss.mask_filtering_training is False
    assert cfg.loss.weights["parts"].tr == 1.0 and cfg.loss.weights["global"].id == 1.0


def test_yaml_round_trip(tmp_path: Path):
    cfg = apply_overrides(Config(), ["train.lr=0.01", "model.backbone=hrnet_w32"])
    path = save_config(cfg, tmp_path / "cfg.yaml")
    again = load_config(path)
    assert again == cfg
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_dotted_overrides_parse_yaml_values():
    cfg = load_config(
        None,
        [
            "model.bpbreid.masks.parts_num=5",
            "model.bpbreid.masks.preprocess=five_v",
            "train.stepsize=[10,20]",
            "train.max_steps=100",
            "train.channels_last=true",
        ],
    )
    assert cfg.model.bpbreid.masks.parts_num == 5
    assert cfg.train.stepsize == [10, 20]
    assert cfg.train.max_steps == 100
    assert cfg.train.channels_last is True
    assert config_diff(cfg)["train.max_steps"] == (None, 100)


def test_override_does_not_mutate_input():
    cfg = Config()
    apply_overrides(cfg, ["train.lr=1.0"])
    assert cfg.train.lr == pytest.approx(3.5e-4)


@pytest.mark.parametrize(
    "override, key",
    [
        ("model.bpbreid.masks.partsnum=5", "model.bpbreid.masks.partsnum"),
        ("trian.lr=1", "trian"),
        ("model.bogus.depth=3", "model.bogus"),
    ],
)
def test_unknown_key_names_key_and_lists_valid_ones(override, key):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    message = str(info.value)
    assert f"'{key}'" in message
    assert "Valid keys" in message


def test_unknown_key_lists_siblings():
    with pytest.raises(ConfigError, match="parts_num"):
        load_config(None, ["model.bpbreid.masks.partsnum=5"])


def test_wrong_type_names_key(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  max_epoch: many\n")
    with pytest.raises(ConfigError, match="train.max_epoch"):
        load_config(path)
    with pytest.raises(ConfigError, match="train.lr"):
        load_config(None, ["train.lr=fast"])


def test_unknown_key_in_yaml_file(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  bpbreid:\n    dim_reduce: 256\n")
    with pytest.raises(ConfigError, match="model.bpbreid.dim_reduce'.*dim_reduce_output"):
        load_config(path)


def test_malformed_override_and_missing_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.lr"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_batch_must_be_multiple_of_instances():
    with pytest.raises(ConfigError, match="multiple"):
        load_config(None, ["train.batch_size=30", "train.num_instances=4"])


def test_official_embedding_aliases(tmp_path: Path):
    assert canonical_embedding("bn_foreg") == "bn_foreground"
    assert canonical_embedding("conct") == "concat_parts"
    assert canonical_embedding("parts") == "parts"
    path = tmp_path / "aliases.yaml"
    path.write_text(
        "model:\n  bpbreid:\n    test_embeddings: [bn_foreg, parts]\n"
        "loss:\n  weights:\n    globl: {id: 1.0}\n    conct: {id: 1.0}\n    parts: {tr: 1.0}\n"
    )
    cfg = load_config(path)
    assert cfg.model.bpbreid.test_embeddings == ["bn_foreground", "parts"]
    # A loss table in a file is a whole recipe: it replaces the default table.
    assert list(cfg.loss.weights) == ["global", "concat_parts", "parts"]
    assert cfg.loss.weights["parts"].tr == 1.0 and cfg.loss.weights["parts"].id == 0.0


def test_unknown_embedding_names_are_errors():
    with pytest.raises(ConfigError, match="test embedding"):
        load_config(None, ["model.bpbreid.test_embeddings=[bn_head]"])


def test_loss_table_is_replaced_not_merged_everywhere(tmp_path: Path):
    from bpbreid.config import EmbeddingLossWeights

    cfg = Config()
    cfg.loss.weights = {"global": EmbeddingLossWeights(id=1.0, tr=1.0)}
    # Through a dict (checkpoints, worker processes) and through a YAML file.
    assert list(config_from_dict(config_to_dict(cfg)).loss.weights) == ["global"]
    assert list(load_config(save_config(cfg, tmp_path / "c.yaml")).loss.weights) == ["global"]
    # Through an override.
    again = load_config(None, ["loss.weights={parts: {tr: 1.0}}"])
    assert list(again.loss.weights) == ["parts"]
