"""One finding shape for every checking command: lint, datasets check, recipe check, doctor (and
qfk train's pre-launch checks, which are recipe check's): id, severity, where, message, fix."""

from __future__ import annotations

import io
import json

import pytest
from conftest import EXAMPLES, write_jsonl

from qwen_factory_kit.convert import convert
from qwen_factory_kit.doctor import check_data_dir
from qwen_factory_kit.findings import SEVERITIES, Finding, failures, print_findings
from qwen_factory_kit.lint import layout_from, lint_rows
from qwen_factory_kit.recipe import check
from qwen_factory_kit.registry import build_entry, check_entry
from qwen_factory_kit.think import format_response

KEYS = ["id", "severity", "where", "message", "fix"]


def printed(findings) -> str:
    from rich.console import Console

    out = io.StringIO()
    print_findings(findings, Console(file=out, width=400, highlight=False, color_system=None))
    return out.getvalue()


def test_every_command_returns_the_same_shape(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"instruction": "q", "input": "", "output": "a"}])
    rows = [{"instruction": "q", "input": "", "output": "<think>\nr never closed"}]
    lint = lint_rows(enumerate(rows, 1), layout_from(None, rows[0])).problems
    registry = check_entry("a", build_entry("a.jsonl"), tmp_path)
    recipe = check.check_types({"lora_rank": "x"}, {"lora_rank": int})
    doctor = [check_data_dir(str(tmp_path / "nowhere"))]
    for f in lint + registry + recipe + doctor:
        assert type(f) is Finding and f.severity in SEVERITIES and f.id and f.message
        assert list(f.as_dict())[:5] == KEYS
    assert [(f.id, f.severity, f.where, f.row) for f in lint] == [("think_unclosed", "error", "row 1, field output", 1)]
    assert [(f.id, f.severity, f.where) for f in registry] == [("entry", "ok", "a")]
    assert [(f.id, f.severity, f.where) for f in recipe] == [("keys", "error", "lora_rank")]
    assert doctor[0].where is None and doctor[0].severity == "info"


def test_text_puts_the_locator_in_front():
    f = Finding("keys", "error", "lora_rank", "'x' is not a valid value", "lora_rank=8")
    assert f.text == "lora_rank: 'x' is not a valid value"
    assert Finding("python", "ok", None, "Python 3.11").text == "Python 3.11"


def test_as_dict_is_the_json_form():
    f = Finding("think_unclosed", "error", "row 3, field output", "the think block is not closed", "rewrite it", row=3)
    assert f.as_dict() == {"id": "think_unclosed", "severity": "error", "where": "row 3, field output",
                           "message": "the think block is not closed", "fix": "rewrite it", "row": 3}
    assert "row" not in Finding("torch", "ok", None, "torch 2.11").as_dict()
    json.dumps(f.as_dict())


@pytest.mark.parametrize("old", ["fail", "warning", "status", ""])
def test_one_severity_vocabulary(old):
    with pytest.raises(ValueError, match="severity"):
        Finding("x", old, None, "m")


def test_failures_are_the_errors_only():
    found = [Finding("a", s, None, s) for s in SEVERITIES]
    assert [f.message for f in failures(found)] == ["error"]


def test_print_findings_one_line_each_then_the_fix():
    out = printed([Finding("keys", "error", "lora_rank", "'x' is not [bold]valid[/bold]", "lora_rank=8"),
                   Finding("torch", "ok", None, "torch 2.11")])
    assert out.splitlines() == ["error keys: lora_rank: 'x' is not [bold]valid[/bold]", "       fix: lora_rank=8",
                                "   ok torch: torch 2.11"]


def test_lint_where_names_row_and_field():
    R = format_response("A.", "r")
    rows = [{"conversations": [{"from": "human", "value": "Q<|im_end|>"}, {"from": "gpt", "value": R}]},
            {"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": R}]},
            {"conversations": [{"from": "human", "value": "Q3"}, {"from": "gpt", "value": "A."}]}]
    rep = lint_rows(enumerate(rows, 1), layout_from(None, rows[0]))
    where = {f.id: (f.where, f.row) for f in rep.problems}
    assert where["chat_special_tokens"] == ("row 1, message 0", 1)
    assert where["mixed_think_mode"] == (None, None)  # a rule on the whole file
    assert rep.summary()["warnings"] == 1 and rep.summary()["errors"] == 1


def test_cli_json_keys_and_exit_codes(tmp_path, qfk):
    """lint exits 1 on errors only; datasets check on errors only; both print the one shape."""
    data = tmp_path / "data"
    convert("medical-r1", str(EXAMPLES / "medical_r1" / "rows.jsonl"), data_dir=str(data), register=True, name="med")
    warned = write_jsonl(tmp_path / "dup.jsonl", [{"instruction": "q", "input": "", "output": "a"}] * 2)
    code, out, _ = qfk("lint", warned, "--template", "qwen3", "--enable-thinking", "false", "--json")
    rep = json.loads(out)
    assert code == 0 and rep["warnings"] == 1 and rep["problems"][0] == {
        "id": "duplicate_row", "severity": "warn", "where": "row 2", "message": "exact duplicate of an earlier row",
        "fix": "deduplicate (qfk convert ... --dedup)", "row": 2}
    code, out, _ = qfk("datasets", "check", "--data-dir", data, "--json")
    assert code == 0 and [(f["id"], f["severity"], f["where"]) for f in json.loads(out)] == [("entry", "ok", "med")]
    (data / "med.jsonl").unlink()
    code, out, _ = qfk("datasets", "check", "--data-dir", data)
    assert code == 1 and "error file: med: File" in out and "fix: convert again" in out
