import pytest

from qwen_factory_kit.think import (EMPTY_BLOCK, PROBLEMS, ThinkTagError, ThinkTally, find_special_tokens,
                                    format_response, normalize_response, parse_response)


def test_format_canonical_with_reasoning():
    assert format_response("  Answer.\n", "\n  step 1\n\nstep 2 \n") == "<think>\nstep 1\n\nstep 2\n</think>\n\nAnswer."


def test_format_empty_forms():
    assert format_response("A") == "<think>\n\n</think>\n\nA"
    assert format_response("A", "") == EMPTY_BLOCK + "A"
    assert format_response("A", "   \n", empty="omit") == "A"
    with pytest.raises(ValueError):
        format_response("A", empty="bogus")


def test_parse_roundtrip_is_canonical():
    text = format_response("42", "6 x 7")
    p = parse_response(text)
    assert p.ok and p.canonical and p.has_block and p.reasoning == "6 x 7" and p.answer == "42"
    empty = parse_response(format_response("42"))
    assert empty.ok and empty.canonical and empty.has_block and empty.reasoning == "" and not empty.has_reasoning


def test_parse_plain_answer():
    p = parse_response("just an answer")
    assert p.ok and not p.has_block and p.reasoning is None and p.canonical


@pytest.mark.parametrize("text", ["<think>abc</think>Answer.", "<think>\nabc\n</think>\nAnswer.", "\n<think>\nabc\n</think>\n\nAnswer."])
def test_noncanonical_whitespace_is_detected_and_normalised(text):
    p = parse_response(text)
    assert p.ok and not p.canonical
    assert normalize_response(text) == "<think>\nabc\n</think>\n\nAnswer."


@pytest.mark.parametrize("text,code", [
    ("<think>\n\n<think>\nreason\n</think>\n\nA", "think_double_open"),
    ("<think>a<think>b</think></think>A", "think_nested"),
    ("<think>\nreason never closed", "think_unclosed"),
    ("reason</think>\n\nA", "think_close_without_open"),
    ("Intro <think>\nr\n</think>\n\nA", "think_not_at_start"),
    ("<think>\na\n</think>\n\nB<think>\nc\n</think>\n\nD", "think_multiple_blocks"),
    ("<think>\nreason only\n</think>\n\n", "think_empty_answer"),
])
def test_malformed(text, code):
    p = parse_response(text)
    assert p.problem == code and not p.ok
    assert code in PROBLEMS
    with pytest.raises(ThinkTagError) as exc:
        normalize_response(text)
    assert exc.value.code == code


def test_normalize_empty_policy():
    assert normalize_response("<think>\n\n</think>\n\nA", empty="omit") == "A"
    assert normalize_response("A", empty="explicit") == EMPTY_BLOCK + "A"
    assert normalize_response("<think></think>A", empty="explicit") == EMPTY_BLOCK + "A"


def test_special_tokens():
    assert find_special_tokens("hi <|im_start|>user x<|im_end|>") == ["<|im_end|>", "<|im_start|>"]
    assert find_special_tokens("a <| b |> c") == []
    assert find_special_tokens("<|endoftext|>") == ["<|endoftext|>"]


def test_tally_modes():
    t = ThinkTally()
    assert t.mode == "none"
    t.add_text(format_response("a", "r"))
    assert t.mode == "reasoning" and t.empty_style == "none"
    t.add_text(format_response("b"))
    assert t.mode == "mixed" and t.empty_style == "explicit"
    t.add_text("c")
    assert t.empty_style == "mixed"
    d = ThinkTally()
    d.add_text("x")
    assert d.mode == "direct" and d.empty_style == "omit"
