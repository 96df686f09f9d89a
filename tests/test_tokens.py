"""qfk stats / render against LLaMA-Factory's own preprocessing."""

import json

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
