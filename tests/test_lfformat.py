"""LLaMA-Factory's ShareGPT turn rule, written once (lfformat.turn_problem) and checked against
LLaMA-Factory's own converter."""

import doctest

import pytest

from qwen_factory_kit import lfformat
from qwen_factory_kit.lfformat import SHAREGPT_TAGS, TURN_PROBLEMS, turn_problem

CASES = [
    (["human", "gpt"], None),
    (["system", "human", "gpt", "human", "gpt"], None),
    (["human", "function_call", "observation", "gpt"], None),
    ([], "empty_conversation"),
    (["system"], "empty_conversation"),
    (["human"], "ends_without_answer"),
    (["system", "human", "gpt", "human"], "ends_without_answer"),
    (["gpt", "human"], "role_order"),
    (["human", "human", "gpt"], "role_order"),
    (["human", "system", "gpt"], "system_not_first"),
    (["system", "system", "human", "gpt"], "system_not_first"),
    (["human", "wizard"], "invalid_role"),
    (["human", None], "invalid_role"),
    (["gpt", "human", "wizard"], "role_order"),  # the first problem in message order wins
]


@pytest.mark.parametrize("roles, code", CASES)
def test_turn_problem(roles, code):
    found = turn_problem(roles)
    assert (found and found[0]) == code
    assert found is None or (found[0] in TURN_PROBLEMS and found[1])


def test_details_name_the_message():
    assert turn_problem(["system", "human", "human"])[1].startswith("message 2 is 'human' where a assistant turn")
    assert turn_problem(["human", "human"], positions=[3, 7])[1].startswith("message 7 ")


def test_a_tags_block_replaces_the_defaults():
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
    assert turn_problem(["user", "assistant"], tags) is None
    assert turn_problem(["system", "user", "assistant"], tags)[0] == "invalid_role"  # no system_tag: a turn like any
    assert turn_problem(["human", "gpt"], tags)[0] == "invalid_role"


@pytest.mark.slow  # imports LLaMA-Factory (torch, transformers)
@pytest.mark.parametrize("roles, code", CASES)
def test_llamafactory_drops_exactly_the_rows_turn_problem_names(roles, code):
    converter = pytest.importorskip("llamafactory.data.converter")
    parser = pytest.importorskip("llamafactory.data.parser")
    attr = parser.DatasetAttr("file", dataset_name="x", formatting="sharegpt")
    attr.messages = "conversations"
    conv = converter.SharegptDatasetConverter(attr, None)
    example = {"conversations": [{"from": r, "value": f"text {i}"} for i, r in enumerate(roles)]}
    out = conv(example)
    kept = bool(out["_prompt"]) and bool(out["_response"])
    assert kept == (code is None)
    assert SHAREGPT_TAGS == {k: getattr(attr, k) for k in SHAREGPT_TAGS}


def test_doctests():
    assert doctest.testmod(lfformat).failed == 0
