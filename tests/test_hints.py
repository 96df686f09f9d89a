"""Hints point the right way.

* Every ``--option`` a hint names exists: the test reads every string of the package with
  :mod:`ast` (QfkError hints, Finding fixes, the options notes name, help, docstrings' examples)
  and checks each option it names against the real click command tree: on the ``qfk`` command it
  follows (``qfk recipe new ... --method``), or, named without a command, on at least one command.
  Options of other programs' commands (``pip install ... --no-build-isolation``) and the items of
  argument lists (torchrun's ``"--nnodes"``) are theirs.
* A run whose every row is rejected for missing fields names the converter the rows fit, with the
  command to type (FineTome rows given to medical-r1, and small rows of each kind).
* ``qfk convert moses FILE`` gives the file's folder only when that folder is a corpus, and
  otherwise says which file names moses reads; ``qfk chat`` on a folder that is no model names
  what MODEL may be; a note names the option that changes it.
"""

from __future__ import annotations

import ast
import json
import re
from functools import lru_cache
from pathlib import Path

import click
import pytest
from conftest import ROOT, write_jsonl

from qwen_factory_kit.cli.main import cli
from qwen_factory_kit.convert import convert
from qwen_factory_kit.convert.fit import Fit, fitting_converter
from qwen_factory_kit.errors import QfkError

PACKAGE = ROOT / "qwen_factory_kit"
#: commands of other programs that hints spell out: their options are theirs
EXTERNAL = {"llamafactory-cli", "pip", "pip3", "huggingface-cli", "modelscope", "torchrun", "python", "python3",
            "accelerate", "deepspeed", "git", "jq", "nvidia-smi", "ollama", "vllm"}
_TOKEN = re.compile(r"(?P<opt>(?<![\w-])--[A-Za-z][\w-]*)|(?P<sep>&&|[;|`()\n])|(?P<word>[^\s;|`()/]+)")


# ---- the command tree -------------------------------------------------------------------------
@lru_cache(maxsize=None)
def commands() -> dict[tuple[str, ...], click.Command]:
    """Every qfk command by its path (``("recipe", "new")``; ``()`` is qfk itself)."""
    out: dict[tuple[str, ...], click.Command] = {}

    def walk(cmd: click.Command, path: tuple[str, ...]) -> None:
        out[path] = cmd
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, path + (name,))

    walk(cli, ())
    return out


def options_of(path: tuple[str, ...]) -> set[str]:
    """The long options of the command at ``path``; of a group, those of every command under it
    (``qfk convert ... --encoding`` names an option of its subcommands)."""
    found = {"--help"}
    for p, cmd in commands().items():
        if p[:len(path)] == path:
            found |= {o for param in cmd.params for o in (*param.opts, *param.secondary_opts) if o.startswith("--")}
    return found


# ---- the strings ------------------------------------------------------------------------------
def _text(node: ast.AST) -> str:
    """A string expression as the user reads it, with ``{}`` for what is filled in at run time."""
    if isinstance(node, ast.Constant):
        return node.value if isinstance(node.value, str) else "{}"
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _text(node.left) + _text(node.right)
    return " ".join(t for child in ast.iter_child_nodes(node) if (t := _text(child)))


#: a string that is one option alone is an argument list's item (torchrun's, git's), not a hint
_ARGV_ITEM = re.compile(r"--[\w-]+(=.*)?")
#: options that stand for any option in the kit's own docs
PLACEHOLDERS = {"--opt"}


@lru_cache(maxsize=None)
def strings() -> list[tuple[str, str]]:
    """``(file:line, text)`` of every string in the package that names an option (an f-string as
    one text, ``{}`` where a value goes), but the items of argument lists."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        parts = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Constant, ast.JoinedStr)) and id(node) not in parts:
                text = _text(node)
                if "--" in text and not _ARGV_ITEM.fullmatch(text):
                    out.append((f"{path.relative_to(ROOT)}:{node.lineno}", text))
    return out


def named_options(text: str) -> list[tuple[tuple[str, ...] | None, str]]:
    """``(command path, option)`` of each ``--option`` in ``text``: the path of the ``qfk`` command
    it follows in the same clause (a clause ends at ``;``, ``&&``, ``|``, a parenthesis, a backtick
    or a line end), None when it follows none; options of another program's command are left out."""
    out: list[tuple[tuple[str, ...] | None, str]] = []
    path: tuple[str, ...] | None = None
    external = extending = False
    for m in _TOKEN.finditer(text):
        if m["sep"]:
            path, external, extending = None, False, False
        elif m["opt"]:
            extending = False
            if not external:
                out.append((path, m["opt"]))
        else:
            word = re.sub(r"('s|[.,:!?'\"]+)$", "", m["word"])
            if word == "qfk":
                path, external, extending = (), False, True
            elif word in EXTERNAL:
                path, external, extending = None, True, False
            elif extending and path is not None and path + (word,) in commands():
                path += (word,)
            else:
                extending = False
    return out


def wrong_options(items: list[tuple[str, str]]) -> list[str]:
    """Each option named in ``items`` that its command lacks; an option named without a command
    must be one of some command."""
    anywhere = set().union(*(options_of(p) for p in commands())) | PLACEHOLDERS
    wrong = []
    for where, text in items:
        for path, option in named_options(text):
            if path is not None and option not in options_of(path):
                wrong.append(f"{where}: qfk {' '.join(path)} has no {option}: {text[:160]!r}")
            elif path is None and option not in anywhere:
                wrong.append(f"{where}: no qfk command has {option}: {text[:160]!r}")
    return wrong


def test_the_walker_reads_commands_and_clauses():
    assert named_options("qfk recipe new --method merge --from T.yaml && llamafactory-cli export --x") == [
        (("recipe", "new"), "--method"), (("recipe", "new"), "--from")]
    assert named_options("drop --think; qfk chat MODEL -m hi --json (or qfk datasets add F --name N)") == [
        (None, "--think"), (("chat",), "--json"), (("datasets", "add"), "--name")]
    assert named_options("qfk eval's default (--sample for sampling), --val-size/--test-size") == [
        (None, "--sample"), (None, "--val-size"), (None, "--test-size")]
    assert "--fix-escaped-newlines" in options_of(("convert", "medical-r1"))
    assert "--encoding" in options_of(("convert",)) and "--encoding" not in options_of(("chat",))
    found = strings()
    assert len(found) > 300  # hints, help texts, docstrings' examples, notes
    assert any("--fix-escaped-newlines turns" in text and "medical_r1.py" in where for where, text in found)  # a note
    assert any(text.startswith("map it with --lang-map {}=CODE") for _, text in found)  # an f-string, whole
    assert not any(text == "--nproc_per_node" for _, text in found)  # torchrun's argument list


def test_every_hint_names_options_that_exist():
    assert wrong_options(strings()) == []


def test_a_wrong_option_is_found():
    assert wrong_options([("x", "qfk chat MODEL --model M")]) == ["x: qfk chat has no --model: 'qfk chat MODEL --model M'"]
    assert wrong_options([("x", "point --nowhere at it")]) == ["x: no qfk command has --nowhere: 'point --nowhere at it'"]
    assert wrong_options([("x", "pip install flash-attn --no-build-isolation; torchrun --nnodes 2")]) == []


# ---- every row rejected for missing fields: the converter the rows fit --------------------------
FIT_CASES = [
    ({"conversations": [], "source": "s", "score": 4.5}, Fit("sharegpt")),
    ({"messages": []}, Fit("sharegpt")),
    ({"instruction": "i", "question": "q", "think": "t", "answer": "a", "metrics": {}}, Fit("medical-r1")),
    ({"question": "q", "answer": "a"}, Fit("medical-r1", ("--allow-missing-think",))),
    ({"instruction": "i", "prompt": "p", "chosen": "c", "rejected": "r"}, Fit("preference")),
    ({"question": "p", "chosen": [], "rejected": [], "messages": []}, Fit("preference", ("--prompt", "question"))),
    ({"instruction": "i", "input": "", "output": "o"},
     Fit("columns", ("--prompt", "instruction", "--response", "output", "--query", "input"))),
    ({"q": "?", "reasoning": "r", "a": "!", "system": "s"},
     Fit("columns", ("--prompt", "q", "--response", "a", "--think", "reasoning", "--system", "system"))),
    ({"text": "t"}, Fit("columns", ("--prompt", "COLUMN", "--response", "COLUMN"))),
]


@pytest.mark.parametrize("row, fit", FIT_CASES, ids=[c[1].converter + "-" + ",".join(c[0]) for c in FIT_CASES])
def test_the_fields_name_the_converter(row, fit):
    assert fitting_converter(row) == fit
    for option in fit.options[::2]:
        assert option in options_of(("convert", fit.converter))


def test_no_fields_no_guess():
    assert fitting_converter([]) is None


ROWS = {
    "sharegpt": {"conversations": [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": "Hello."}]},
    "medical-r1": {"instruction": "Answer.", "question": "Why?", "think": "Because.\n", "answer": "So.",
                   "metrics": {"quality_f1": 0.95}},
    "preference": {"prompt": "Why?", "chosen": "Good.", "rejected": "Bad."},
}
WRONG = [(given, rows) for given in ("medical-r1", "sharegpt", "preference") for rows in ROWS if rows != given]


@pytest.mark.parametrize("given, rows", WRONG)
def test_rows_given_to_the_wrong_converter_name_the_right_one(tmp_path, qfk, given, rows):
    src = write_jsonl(tmp_path / "rows.jsonl", [ROWS[rows]] * 3)
    code, out, err = qfk("convert", given, src)
    assert code == 2 and "Traceback" not in err
    assert f"every one of the 3 rows was rejected (missing_field (3))" in err
    assert f"{rows} reads these, {given} does not" in err
    assert f"convert them with: qfk convert {rows} {src}" in err and "rows.rejects.jsonl" in err
    code, out, err = qfk("convert", rows, src, "--json")  # the command the hint gives works
    assert code == 0 and json.loads(out)["written"] == 3


def test_rows_of_no_converter_get_the_columns_command(tmp_path):
    src = write_jsonl(tmp_path / "rows.jsonl", [{"instruction": "Add 2 and 2.", "input": "", "output": "4"}] * 2)
    with pytest.raises(QfkError) as exc:
        convert("sharegpt", str(src), output=str(tmp_path / "o.jsonl"))
    assert "the rows have instruction, input, output (no converter reads these by default" in exc.value.message
    hint = exc.value.hint
    assert f"qfk convert columns {src} --prompt instruction --response output --query input" in hint
    res = convert("columns", str(src), output=str(tmp_path / "p.jsonl"), prompt="instruction", response="output", query="input")
    assert res.written == 2


def test_other_rejects_keep_the_plain_hint(tmp_path):
    src = write_jsonl(tmp_path / "rows.jsonl", [{"question": "Why?", "think": "B.", "answer": "<|im_end|>"}])
    with pytest.raises(QfkError) as exc:
        convert("medical-r1", str(src), output=str(tmp_path / "o.jsonl"))
    assert exc.value.message.endswith("nothing was written") and "check the converter" in exc.value.hint


def test_finetome_rows_given_to_medical_r1_name_sharegpt(real_samples, qfk, tmp_path):
    src = real_samples / "finetome" / "rows.jsonl"
    code, out, err = qfk("convert", "medical-r1", src, "-o", tmp_path / "o.jsonl")
    assert code == 2
    assert "the rows have conversations, source, score (sharegpt reads these, medical-r1 does not)" in err
    assert f"convert them with: qfk convert sharegpt {src}" in err
    code, out, err = qfk("convert", "sharegpt", src, "-o", tmp_path / "p.jsonl", "--json")
    assert code == 0 and json.loads(out)["written"] == 4


def test_medical_rows_given_to_sharegpt_name_medical_r1(real_samples, qfk, tmp_path):
    src = real_samples / "medical_r1" / "val_sample.jsonl"
    code, out, err = qfk("convert", "sharegpt", src, "-o", tmp_path / "o.jsonl")
    assert code == 2 and "every one of the 200 rows" in err
    assert "medical-r1 reads these, sharegpt does not" in err and f"qfk convert medical-r1 {src}" in err


# ---- moses on a file ----------------------------------------------------------------------------
def test_moses_on_a_file_of_a_corpus_gives_its_folder(tmp_path, qfk):
    corpus = tmp_path / "kftt"
    corpus.mkdir()
    (corpus / "kyoto-test.en").write_text("Hello.\nBye.\n")
    (corpus / "kyoto-test.ja").write_text("こんにちは。\nさようなら。\n")
    code, out, err = qfk("convert", "moses", corpus / "kyoto-test.en")
    assert code == 2 and "is one file of a corpus" in err and f"qfk convert moses {corpus}" in err
    code, out, err = qfk("convert", "moses", corpus, "-o", tmp_path / "o.jsonl", "--json")  # following it works
    assert code == 0 and json.loads(out)["written"] == 2


def test_moses_on_a_file_outside_a_corpus_names_the_files_it_reads(tmp_path, qfk):
    src = write_jsonl(tmp_path / "data" / "rows.jsonl", [{"a": 1}])
    code, out, err = qfk("convert", "moses", src)
    assert code == 2
    assert f"holds no aligned files" in err and f"qfk convert moses {src.parent}" not in err
    for name in ("corpus.en", "corpus.zh_tw", "OpenSubtitles.en-zh_TW.en", ".txt.zip"):
        assert name in err
    code, out, err = qfk("convert", "moses", src.parent)  # the folder is no corpus: the same names
    assert code == 2 and "no aligned files found" in err and "OpenSubtitles.en-zh_TW.en" in err


def test_moses_on_a_real_kftt_file_gives_its_folder(real_samples, qfk):
    src = real_samples / "moses" / "kftt" / "kyoto-test.en"
    code, out, err = qfk("convert", "moses", src)
    assert code == 2 and f"give the folder: qfk convert moses {src.parent}" in err
    code, out, err = qfk("convert", "moses", real_samples / "finetome" / "rows.jsonl")
    assert code == 2 and "holds no aligned files" in err and "qfk convert moses" not in err


# ---- chat on a folder that is no model; notes --------------------------------------------------
def test_chat_on_a_folder_that_is_no_model_names_what_model_may_be(tmp_path, qfk):
    (tmp_path / "data").mkdir()
    code, out, err = qfk("chat", tmp_path / "data")
    assert code == 2 and "--model" not in err
    assert "no qfk_serving.json (qfk merge), no qfk_run.json (qfk train) and no config.json" in err
    assert "give as MODEL" in err


def test_a_note_names_the_option_that_changes_it(tmp_path, qfk):
    rows = [{"question": "Why?", "think": "B.\n", "answer": "One\\nTwo", "metrics": {"quality_f1": 0.95}}]
    src = write_jsonl(tmp_path / "rows.jsonl", rows)
    code, out, err = qfk("convert", "medical-r1", src, "-o", tmp_path / "o.jsonl")
    assert code == 0 and "note escaped_newlines_in_answer: 1 (--fix-escaped-newlines turns them into line breaks)" in out
    code, out, err = qfk("convert", "medical-r1", src, "-o", tmp_path / "o.jsonl", "--fix-escaped-newlines", "--json")
    s = json.loads(out)
    assert s["notes"] == {"escaped_newlines_fixed_in_answer": 1, "escaped_newlines_in_answer": 1}
    assert s["note_options"] == {}  # asked for: nothing to point at
