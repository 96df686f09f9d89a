"""qfk stats / render against LLaMA-Factory's own preprocessing."""

import json
from pathlib import Path

import pytest
from conftest import EXAMPLES

from qwen_factory_kit.convert import convert

pytestmark = pytest.mark.slow
lfb = pytest.importorskip("qwen_factory_kit.lfbridge")


@pytest.fixture(scope="module")
def tok():
    return lfb.load_tokenizer()


@pytest.mark.parametrize("conv,src,opts,et", [
    ("medical-r1", EXAMPLES / "medical_r1" / "rows.jsonl", {}, True),
    ("sharegpt", EXAMPLES / "finetome", {}, None),
    ("sharegpt", EXAMPLES / "finetome", {"format": "sharegpt"}, False),
])
def test_stats_lengths_equal_llamafactory_input_ids(tmp_path, tok, qfk, conv, src, opts, et):
    data = tmp_path / "data"
    res = convert(conv, str(src), data_dir=str(data), register=True, name="ds", **opts)
    et_s = {True: "true", False: "false", None: "null"}[et]
    code, out, err = qfk("stats", "ds", "--data-dir", data, "--enable-thinking", et_s, "--cutoff-len", "100000", "--json")
    assert code == 0, err
    s = json.loads(out)
    ds = lfb.preprocess(data, "ds", tokenizer=tok, enable_thinking=et, cutoff_len=100000)
    assert s["lengths"] == [len(ex["input_ids"]) for ex in ds]
    assert s["rows"] == res.rows_out and s["rows_over_cutoff"] == 0


def test_stats_names_rows_that_lose_think_close(tmp_path, qfk):
    data = tmp_path / "data"
    convert("medical-r1", str(EXAMPLES / "medical_r1" / "rows.jsonl"), data_dir=str(data), register=True, name="med")
    plot = tmp_path / "len.png"
    code, out, _ = qfk("stats", "med", "--data-dir", data, "--cutoff-len", "60", "--plot", plot, "--json")
    s = json.loads(out)
    assert code == 0 and s["rows_over_cutoff"] == sum(n > 60 for n in s["lengths"]) > 0
    # reasoning data: measured as recipe new trains it, think blocks trained
    assert (s["template"], s["enable_thinking"], s["think_mode"]) == ("qwen3", True, "reasoning")
    assert s["settings_why"].startswith("reasoning data, manifest med.manifest.json: ")
    assert s["rows_losing_think_close"] and s["rows_losing_answer"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert s["recommended_cutoff_len"] >= s["total"]["p99"]


def test_render_marks_trained_part(tmp_path, qfk):
    data = tmp_path / "data"
    convert("medical-r1", str(EXAMPLES / "medical_r1" / "rows.jsonl"), data_dir=str(data), register=True, name="med")
    code, out, _ = qfk("render", "med", "--row", "1", "--data-dir", data)
    assert code == 0 and out.startswith("<|im_start|>user\n")
    assert "[[TRAIN]]<think>\n" in out and out.rstrip().endswith("<|im_end|>\n[[/TRAIN]]")
    code, out, _ = qfk("render", "med", "--row", "1", "--data-dir", data, "--enable-thinking", "false", "--json")
    segs = json.loads(out)
    assert "<think>\n\n</think>\n\n" in segs[0]["text"] and not segs[0]["trained"]  # empty block moved to the prompt
    assert "<think>" not in "".join(s["text"] for s in segs if s["trained"])
    code, _, err = qfk("render", "med", "--row", "999", "--data-dir", data)
    assert code == 2 and "no row 999" in err


QA_CSV = 'question,answer\nWhat is 2+2?,It is 4.\nName a colour.,Blue is a colour.\nCapital of France?,"Paris, the capital of France."\n'


def test_stats_on_direct_data_measures_as_recipe_new_trains(tmp_path, tok, qfk):
    from qwen_factory_kit.recipe.build import new_recipe
    from qwen_factory_kit.recipe.request import RecipeRequest

    data = tmp_path / "data"
    (tmp_path / "qa.csv").write_text(QA_CSV, encoding="utf-8")
    convert("columns", str(tmp_path / "qa.csv"), data_dir=str(data), register=True, name="qa", prompt="question", response="answer")
    code, out, err = qfk("stats", "qa", "--data-dir", data, "--cutoff-len", "100000", "--json")
    assert code == 0, err
    s = json.loads(out)
    assert (s["template"], s["enable_thinking"], s["think_mode"]) == ("qwen3", False, "direct")
    assert s["settings_why"].startswith("direct data, manifest qa.manifest.json: no response has reasoning")
    recipe = new_recipe(RecipeRequest("lora", model="Qwen3-4B", datasets=["qa"], data_dir=str(data), stats=False))
    assert (recipe.info["template"], recipe.info["enable_thinking"]) == ("qwen3", False)

    # given explicitly, true is kept (and trains the empty block too)
    code, out, _ = qfk("stats", "qa", "--data-dir", data, "--cutoff-len", "100000", "--enable-thinking", "true", "--json")
    given = json.loads(out)
    assert given["enable_thinking"] is True and given["settings_why"].startswith("enable_thinking true as given; template qwen3")
    # the plain report says which and why, on one line; a copy without a manifest is scanned
    code, out, _ = qfk("stats", "qa", "--data-dir", data, "--cutoff-len", "100000")
    assert "  template qwen3, enable_thinking false (direct data, manifest qa.manifest.json: no response has reasoning" in out
    loose = tmp_path / "loose.jsonl"
    loose.write_bytes((data / "qa.jsonl").read_bytes())
    code, out, _ = qfk("stats", loose, "--data-dir", data, "--json")
    assert code == 0 and json.loads(out)["settings_why"].startswith("direct data, scanned 3 rows: ")
    # qfk render takes the same settings: the empty block is in the prompt, only the answer is trained
    code, out, _ = qfk("render", "qa", "--row", "1", "--data-dir", data, "--json")
    segs = json.loads(out)
    assert "<think>\n\n</think>\n\n" in segs[0]["text"] and [s["text"] for s in segs if s["trained"]] == ["It is 4.<|im_end|>\n"]

    # every row's length and trained tokens are LLaMA-Factory's in that mode (3 rows: min, p50, max are all of them)
    ds = lfb.preprocess(data, "qa", tokenizer=tok, enable_thinking=False, cutoff_len=100000)
    assert s["lengths"] == [len(ex["input_ids"]) for ex in ds]
    trained = sorted(sum(label != -100 for label in ex["labels"]) for ex in ds)
    assert [s["response"][k] for k in ("min", "p50", "max")] == trained
    # under true the empty block <think>\n\n</think>\n\n (4 tokens) is trained with each answer
    assert [given["response"][k] for k in ("min", "p50", "max")] == [n + 4 for n in trained]


def test_the_model_a_tokenizer_belongs_to_picks_the_template_as_recipe_new_does(tmp_path):
    from qwen_factory_kit.recipe.request import think_for_rows

    (tmp_path / "qa.csv").write_text(QA_CSV, encoding="utf-8")
    res = convert("columns", str(tmp_path / "qa.csv"), data_dir=str(tmp_path / "data"), prompt="question", response="answer")
    rows, entry = Path(res.output), {"formatting": "alpaca"}
    instruct = tmp_path / "Qwen3-4B-Instruct-2507"
    instruct.mkdir()
    (instruct / "config.json").write_text(json.dumps({"model_type": "qwen3", "hidden_size": 2560, "num_hidden_layers": 36}))
    assert (think_for_rows(rows, entry).template, think_for_rows(rows, entry).enable) == ("qwen3", False)
    on_instruct = think_for_rows(rows, entry, model=str(instruct))
    assert (on_instruct.template, on_instruct.enable) == ("qwen3_nothink", None) and "Instruct-2507" in on_instruct.why
    assert think_for_rows(rows, entry, model=str(tmp_path / "not-a-model")).template == "qwen3"  # a plain tokenizer folder
