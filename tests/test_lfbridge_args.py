"""lfbridge's argument parsing against the real LLaMA-Factory 0.9.5 (imports it: seconds, hence slow).

The kit's rules built on these answers are tested without LLaMA-Factory in test_check_rules.py.
"""

from __future__ import annotations

import json

import pytest

from qwen_factory_kit import lfbridge
from qwen_factory_kit.recipe.check import _type_ok

pytestmark = pytest.mark.slow


@pytest.fixture
def recipe(tmp_path, monkeypatch) -> dict:
    """A minimal SFT recipe on a local Qwen3 config (LLaMA-Factory's parser loads no model)."""
    from qwen_factory_kit.tiny import TINY_CONFIG

    model = tmp_path / "tiny-qwen3"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "qwen3", **TINY_CONFIG}))
    monkeypatch.chdir(tmp_path)
    return dict(model_name_or_path=str(model), stage="sft", do_train=True, finetuning_type="lora", lora_target="all",
                dataset="anything", template="qwen3", output_dir="saves/x", use_cpu=True, bf16=False, report_to="none")


def test_argument_fields_are_llamafactorys_annotations():
    fields = lfbridge.argument_fields()
    assert fields["lora_rank"] is int and fields["learning_rate"] is float
    assert _type_ok(True, fields["enable_thinking"]) and _type_ok(None, fields["enable_thinking"])
    assert _type_ok("no", fields["eval_strategy"]) and not _type_ok(False, fields["eval_strategy"])


def test_parse_recipe_args_takes_a_good_recipe(recipe):
    assert lfbridge.parse_recipe_args(recipe) is None
    assert lfbridge.llamafactory_version().startswith("0.9.5")


def test_parse_recipe_args_names_the_kind_of_refusal(recipe):
    unknown = lfbridge.parse_recipe_args({**recipe, "foo": 1})
    assert unknown.kind == "unknown-key" and "foo" in unknown.message
    value = lfbridge.parse_recipe_args({**recipe, "template": None, "stage": "ppo", "reward_model": None})
    assert value is not None and value.kind == "value" and "reward_model" in value.message
