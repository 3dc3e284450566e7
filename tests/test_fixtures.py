"""The fixture generator writes checkpoints laid out exactly like the real snapshots."""
from __future__ import annotations

import json

import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from export import data
from export.fixtures import build_fixture, fixture_config, phi3_decoder_tensors

REAL_MINI_PARAMETERS = 3_821_079_552  # Phi-3.5-mini-instruct, from its safetensors index (7.64 GB in bf16)


def test_tiny_keeps_every_config_key_and_option(tiny_snapshot):
    real = data.load_config("phi-3.5-mini-instruct.config.json")
    tiny = json.loads((tiny_snapshot / "config.json").read_text())
    assert tiny.keys() == real.keys()
    shrunk = {"hidden_size", "num_attention_heads", "num_key_value_heads", "intermediate_size", "num_hidden_layers"}
    for key in real.keys() - shrunk:
        assert tiny[key] == real[key], key
    assert tiny["hidden_size"] // tiny["num_attention_heads"] == real["hidden_size"] // real["num_attention_heads"]
    assert tiny["hidden_size"] < real["hidden_size"]


def test_tiny_has_the_real_file_layout(tiny_snapshot):
    names = {p.name for p in tiny_snapshot.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors.index.json", "tokenizer.json",
            "tokenizer_config.json", "chat_template.jinja", "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors"} <= names
    index = json.loads((tiny_snapshot / "model.safetensors.index.json").read_text())
    expected = dict(phi3_decoder_tensors(fixture_config("phi-3.5-mini", "tiny")))
    assert set(index["weight_map"]) == set(expected)
    for name, shard in index["weight_map"].items():
        with safe_open(tiny_snapshot / shard, framework="pt") as handle:
            assert tuple(handle.get_slice(name).get_shape()) == expected[name]
            assert handle.get_slice(name).get_dtype() == "BF16"


def test_transformers_loads_it_with_no_missing_or_unexpected_weights(tiny_snapshot):
    model, info = AutoModelForCausalLM.from_pretrained(tiny_snapshot, output_loading_info=True,
                                                       trust_remote_code=False, dtype=torch.float32)
    assert type(model).__name__ == "Phi3ForCausalLM"
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    norm = model.model.layers[0].input_layernorm.weight
    assert 0.5 < float(norm.detach().mean()) < 1.5 and float(norm.detach().std()) > 0.01  # near 1, not all ones


def test_full_size_layout_matches_the_real_parameter_count():
    shapes = phi3_decoder_tensors(fixture_config("phi-3.5-mini", "full"))
    total = 0
    for _name, shape in shapes:
        n = 1
        for dim in shape:
            n *= dim
        total += n
    assert total == REAL_MINI_PARAMETERS


def test_seed_decides_the_weights(tmp_path):
    a = build_fixture("phi-3.5-mini", "tiny", tmp_path / "a", seed=1)
    b = build_fixture("phi-3.5-mini", "tiny", tmp_path / "b", seed=1)
    c = build_fixture("phi-3.5-mini", "tiny", tmp_path / "c", seed=2)
    shard = "model-00002-of-00002.safetensors"
    assert (a / shard).read_bytes() == (b / shard).read_bytes()
    assert (a / shard).read_bytes() != (c / shard).read_bytes()
