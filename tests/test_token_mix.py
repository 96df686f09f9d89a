"""Mixes that hold in trained tokens (issue 21): ``qfk recipe new --mix ... --mix-by rows|tokens``.

* The seeded pick order and the solver (pure, no tokenizer).
* On the real medical and FineTome rows (../shared/real-samples; skipped without it): a 75/25 row
  mix is about 86/14 in trained tokens; a token mix holds 75/25 within one point, in the label
  tokens of the ``NAME__tN`` entries as LLaMA-Factory's own loader trains them.
* On self-made rows (always): the same, the header's shares in rows / trained / all tokens for
  either mode, recipe check's warnings once the data changes, ``--mix-total`` with repeats,
  hostile ``--mix-by`` values, the registry, ``recipe cp``/``webui``/``train``'s re-making of a
  missing entry, and bundles (re-picked from the base, checked against the recorded sha256).
"""

from __future__ import annotations

import json
import random
import shutil
import zipfile
from pathlib import Path

import pytest
from conftest import read_jsonl, write_jsonl

from qwen_factory_kit.convert import convert
from qwen_factory_kit.errors import QfkError
from qwen_factory_kit.recipe.build import RecipeRequest, new_recipe
from qwen_factory_kit.recipe.sizing import NO_GPU
from qwen_factory_kit.recipe.tokenmix.picks import PICK_SEED, chosen_indexes, pick_order
from qwen_factory_kit.recipe.tokenmix.shares import read_share_lines
from qwen_factory_kit.recipe.tokenmix.solve import TOLERANCE, token_mix_counts
from qwen_factory_kit.registry import Registry, base_name, related_names


# ---------------------------------------------------------------------------------------------
# pure: the pick order and the solver
# ---------------------------------------------------------------------------------------------
def test_pick_order_is_fixed_and_every_count_is_a_prefix():
    assert PICK_SEED == 42
    assert pick_order(8) == [0, 2, 5, 4, 1, 6, 7, 3]  # pinned: the name NAME__tN must mean the same rows everywhere
    assert sorted(pick_order(1000)) == list(range(1000)) and pick_order(1000) == pick_order(1000)
    assert pick_order(8, seed=1) != pick_order(8)
    for n in range(1, 8):
        assert set(chosen_indexes(8, n)) < set(chosen_indexes(8, n + 1))
    assert chosen_indexes(8, 8) == list(range(8))
    assert chosen_indexes(4, 10) == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]  # two full passes, then the order's first two (0, 2)
    with pytest.raises(QfkError):
        chosen_indexes(0, 3)


def test_solver_holds_the_ratios_in_tokens_with_the_largest_mix():
    got = token_mix_counts({"a": 0.75, "b": 0.25}, {"a": [1000] * 100, "b": [100] * 100})
    assert got.counts == {"a": 30, "b": 100} and got.within and got.shares == {"a": 0.75, "b": 0.25}
    # --mix-total asks for more rows than there are: rows go round again, the total closest to it
    more = token_mix_counts({"a": 0.75, "b": 0.25}, {"a": [1000] * 100, "b": [100] * 100}, total=260)
    assert more.counts == {"a": 60, "b": 200} and more.within
    rng = random.Random(5)
    a, b, c = ([rng.randint(lo, hi) for _ in range(n)] for lo, hi, n in ((300, 3000, 3000), (50, 900, 9000), (10, 60, 800)))
    three = token_mix_counts({"a": 0.5, "b": 0.3, "c": 0.2}, {"a": a, "b": b, "c": c})
    assert three.off <= TOLERANCE and three.counts["c"] >= 790  # c limits the mix: (nearly) all of it
    assert all(three.counts[n] <= len(w) for n, w in (("a", a), ("b", b), ("c", c)))  # no row repeats


def test_solver_says_when_the_rows_do_not_allow_a_point():
    got = token_mix_counts({"a": 0.75, "b": 0.25}, {"a": [1000], "b": [1]})
    assert not got.within and got.off > 0.2 and got.counts == {"a": 1, "b": 1}
    with pytest.raises(QfkError, match="trains no tokens"):
        token_mix_counts({"a": 0.5, "b": 0.5}, {"a": [0, 0], "b": [3]})


def test_registry_knows_the_token_mix_suffix(tmp_path):
    assert base_name("med__t12") == "med" and base_name("med__clean__max2048__t7") == "med"
    data = {"med": {"file_name": "med.jsonl"}, "med__t12": {"file_name": "med__t12.jsonl"},
            "med__n3": {"file_name": "med.jsonl", "num_samples": 3}, "medic": {"file_name": "x.jsonl"}}
    assert related_names("med", data, tmp_path) == ["med__t12", "med__n3"]


# ---------------------------------------------------------------------------------------------
# helpers: datasets, recipes
# ---------------------------------------------------------------------------------------------
def _rows(n: int, words: tuple[int, int], seed: int, tag: str) -> list[dict]:
    rng = random.Random(seed)
    return [{"prompt": f"{tag} question {i}?", "answer": " ".join(f"{tag}{rng.randint(0, 99)}" for _ in range(rng.randint(*words)))}
            for i in range(n)]


def _columns(src: Path, data: Path, name: str) -> None:
    convert("columns", str(src), data_dir=str(data), name=name, register=True, force=True, prompt="prompt", response="answer")


@pytest.fixture
def made(tmp_path, monkeypatch) -> Path:
    """A folder recipes run from, with two self-made datasets: long answers (long) and short ones (short)."""
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "src" / "long.jsonl", _rows(60, (60, 200), 1, "l"))
    write_jsonl(tmp_path / "src" / "short.jsonl", _rows(80, (5, 30), 2, "s"))
    for name in ("long", "short"):
        _columns(tmp_path / "src" / f"{name}.jsonl", tmp_path / "data", name)
    return tmp_path


def _recipe(data: Path, mix: dict, *, mix_by=None, total=None, name="mix.yaml", **kw):
    recipe = new_recipe(RecipeRequest(method="lora", model="Qwen3-0.6B", mix=mix, mix_by=mix_by, mix_total=total,
                                      data_dir=str(data), output_dir="saves/mix", filename=name, gpu=NO_GPU,
                                      command=f"qfk recipe new --mix {','.join(f'{k}={v}' for k, v in mix.items())}"
                                              + (f" --mix-by {mix_by}" if mix_by else "") + f" -o {name}", **kw))
    Path(name).write_text(recipe.render(), encoding="utf-8")
    return recipe


def _lf_trained(data: Path, recipe, name: str) -> int:
    """Label tokens LLaMA-Factory's own loader trains for dataset ``name`` with the recipe's settings."""
    from qwen_factory_kit.lfbridge import preprocess

    a = recipe.args
    ds = preprocess(data, name, template=a["template"], enable_thinking=a["enable_thinking"], cutoff_len=a["cutoff_len"])
    return sum(sum(1 for t in ex["labels"] if t != -100) for ex in ds)


def check_recipe_findings(path: str):
    from qwen_factory_kit.recipe.check import check_recipe

    return check_recipe(path, parse=False, types=False)


def _mix_findings(path: str):
    return [f for f in check_recipe_findings(path) if f.id == "mix"]


# ---------------------------------------------------------------------------------------------
# the real medical and FineTome rows
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def real(real_samples, tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    convert("medical-r1", str(real_samples / "medical_r1" / "val_sample.jsonl"), data_dir=str(data), name="med", register=True)
    convert("sharegpt", str(real_samples / "finetome" / "rows.jsonl"), data_dir=str(data), name="chat", register=True)
    return data


@pytest.mark.slow
def test_real_rows_a_row_mix_is_86_14_in_trained_tokens(real):
    recipe = _recipe(real, {"med": 0.75, "chat": 0.25})
    assert recipe.args["dataset"] == "med__n12,chat" and recipe.info["mix_by"] == "rows"
    shares = recipe.info["shares"]
    assert shares["med__n12"]["rows"] == 75.0 and shares["chat"]["rows"] == 25.0
    assert 84.0 <= shares["med__n12"]["trained"] <= 88.0  # the 86/14: reasoning rows are long
    header = recipe.render().splitlines()
    assert any(line.startswith("#   med__n12: rows 75.0%, trained tokens 8") and "expected: num_samples draws 12 of 200" in line
               for line in header)


@pytest.mark.slow
def test_real_rows_a_token_mix_holds_in_the_tokens_llamafactory_trains(real):
    recipe = _recipe(real, {"med": 0.75, "chat": 0.25}, mix_by="tokens")
    names = recipe.args["dataset"].split(",")
    assert [base_name(n) for n in names] == ["med", "chat"] and recipe.info["token_mix"]["within"]
    trained = {n: _lf_trained(real, recipe, n) for n in names}  # LLaMA-Factory's loader on the registered entries
    share = trained[names[0]] / sum(trained.values())
    assert abs(share - 0.75) <= TOLERANCE
    assert recipe.info["shares"][names[0]]["trained"] == round(100 * share, 1)  # the header states what is trained
    for n in names:
        if n.startswith("med__t"):
            manifest = json.loads((real / f"{n}.manifest.json").read_text())
            assert sum(manifest["tokens"]["trained"]) == trained[n]


# ---------------------------------------------------------------------------------------------
# self-made rows
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_token_mix_on_self_made_rows_loads_with_llamafactory(made):
    data = made / "data"
    rows = _recipe(data, {"long": 0.5, "short": 0.5})
    assert rows.args["dataset"] == "long,short__n60"  # all 60 long rows, 60 of the 80 short ones
    assert rows.info["shares"]["long"]["rows"] == 50.0 and rows.info["shares"]["long"]["trained"] > 80

    recipe = _recipe(data, {"long": 0.5, "short": 0.5}, mix_by="tokens", name="tok.yaml")
    long_name, short_name = recipe.args["dataset"].split(",")
    assert long_name.startswith("long__t") and base_name(short_name) == "short"  # short limits the mix: (nearly) all of it
    assert short_name == "short" or int(short_name.removeprefix("short__t")) >= 70
    count = int(long_name.removeprefix("long__t"))
    reg = Registry(data).read()
    assert reg[long_name]["file_name"] == f"{long_name}.jsonl" and "num_samples" not in reg[long_name]
    manifest = json.loads((data / f"{long_name}.manifest.json").read_text())
    assert manifest["token_mix"]["base"] == "long" and manifest["token_mix"]["rows"] == 60 and manifest["token_mix"]["count"] == count
    assert manifest["token_mix"]["sha256"] == __import__("hashlib").sha256((data / "long.jsonl").read_bytes()).hexdigest()
    source = read_jsonl(data / "long.jsonl")
    picked = read_jsonl(data / f"{long_name}.jsonl")
    assert picked == [source[i] for i in chosen_indexes(60, count)] and manifest["rows"] == [i + 1 for i in chosen_indexes(60, count)]

    trained = {n: _lf_trained(data, recipe, n) for n in (long_name, short_name)}
    assert sum(manifest["tokens"]["trained"]) == trained[long_name]
    assert abs(trained[long_name] / sum(trained.values()) - 0.5) <= TOLERANCE


@pytest.mark.slow
def test_trained_tokens_of_cut_rows_are_what_llamafactory_keeps(made):
    """The statistics count the labels LLaMA-Factory trains at cutoff_len, also of rows longer than it."""
    from qwen_factory_kit.lfbridge import preprocess
    from qwen_factory_kit.tokens import file_stats

    data = made / "data"
    entry = Registry(data).read()["long"]
    st = file_stats(data / "long.jsonl", entry, enable_thinking=False, cutoff_len=64, cache=False)
    ds = preprocess(data, "long", enable_thinking=False, cutoff_len=64)
    assert sum(1 for r in st.rows if r.lost) > 30  # most rows are cut
    assert [r.trained for r in st.rows] == [sum(1 for t in ex["labels"] if t != -100) for ex in ds]
    assert [r.kept for r in st.rows] == [len(ex["input_ids"]) for ex in ds]
    assert all(r.trained < r.response for r in st.rows if r.lost)


@pytest.mark.slow
def test_headers_state_the_shares_in_either_mode(made):
    data = made / "data"
    for mix_by, name in ((None, "rows.yaml"), ("tokens", "tokens.yaml")):
        recipe = _recipe(data, {"long": 0.6, "short": 0.4}, mix_by=mix_by, name=name)
        header = [line[2:] for line in recipe.render().splitlines() if line.startswith("# ")]
        settings, stated = read_share_lines(header)
        assert settings == f"template {recipe.args['template']}, enable_thinking false, cutoff_len {recipe.args['cutoff_len']}"
        assert set(stated) == set(recipe.args["dataset"].split(",")) and stated == recipe.info["shares"]
        for values in stated.values():
            assert set(values) == {"rows", "trained", "total"}
        assert sum(v["rows"] for v in stated.values()) == pytest.approx(100, abs=0.2)
        ok = _mix_findings(name)
        assert [f.severity for f in ok if "stated shares" in f.message] == ["ok"]
    assert any(line.startswith("# Mix by trained tokens (--mix-by tokens") for line in Path("tokens.yaml").read_text().splitlines())


@pytest.mark.slow
def test_a_row_mix_states_shares_estimated_from_the_rows_it_measured(made):
    """A row mix measures the first --stats-rows rows of each file (a 100,000-row dataset whole took
    157 s instead of 17 s) and says so; recipe check measures the same rows, so its shares hold."""
    data = made / "data"
    recipe = _recipe(data, {"long": 0.5, "short": 0.5}, stats_rows=20, name="sampled.yaml")
    text = recipe.render()
    assert "estimated from the first 20 of 60 rows" in text and "estimated from the first 20 of 80 rows" in text
    assert "~" in text.split("Shares per epoch", 1)[1].split("\n### ", 1)[0]
    ok = _mix_findings("sampled.yaml")  # check_recipe's own stats_rows (2000) is not what the header was measured on
    assert [f.severity for f in ok if "stated shares" in f.message] == ["ok"]


@pytest.mark.slow
def test_recipe_check_warns_when_the_data_changed(made):
    data = made / "data"
    _recipe(data, {"long": 0.5, "short": 0.5}, name="rows.yaml")
    _recipe(data, {"long": 0.5, "short": 0.5}, mix_by="tokens", name="tokens.yaml")
    assert not [f for f in _mix_findings("rows.yaml") + _mix_findings("tokens.yaml") if f.severity == "warn"]

    # long is converted again from other rows (shorter answers): the row mix's token shares move,
    # and the token mix's file no longer comes from the data as it is
    write_jsonl(made / "src" / "long.jsonl", _rows(60, (20, 40), 3, "l"))
    _columns(made / "src" / "long.jsonl", data, "long")
    rows = [f for f in _mix_findings("rows.yaml") if f.severity == "warn"]
    assert len(rows) == 1 and "no longer match the data" in rows[0].message and "trained tokens" in rows[0].message
    assert rows[0].fix.startswith("make the recipe again") and "qfk recipe new --mix long=0.5,short=0.5 -o rows.yaml --force" in rows[0].fix
    tokens = [f for f in _mix_findings("tokens.yaml") if f.severity == "warn"]
    assert len(tokens) == 1 and "long changed since" in tokens[0].message and "re-converted" in tokens[0].message

    # the settings the recipe trains with count too: a cutoff that cuts the answers moves the shares
    from qwen_factory_kit.recipe.check import check_recipe

    cut = [f for f in check_recipe("rows.yaml", ["cutoff_len=48"], parse=False, types=False) if f.id == "mix"]
    assert any(f.severity == "warn" and "cutoff_len 48" in f.message for f in cut)


@pytest.mark.slow
def test_mix_total_repeats_rows_of_a_token_mix(made):
    recipe = _recipe(made / "data", {"long": 0.5, "short": 0.5}, mix_by="tokens", total=400)
    names = recipe.args["dataset"].split(",")
    assert all(n.startswith(("long__t", "short__t")) for n in names)
    counts = {base_name(n): int(n.rsplit("__t", 1)[1]) for n in names}
    assert abs(sum(counts.values()) - 400) <= 10 and counts["short"] > 80  # short repeats its rows
    picked = read_jsonl(made / "data" / f"short__t{counts['short']}.jsonl")
    assert len(picked) == counts["short"] and len({json.dumps(r) for r in picked}) == 80
    assert recipe.info["token_mix"]["within"]


def test_mix_by_hostile_values_are_usage_errors(made, qfk):
    base = ("recipe", "new", "--model", "Qwen3-0.6B", "--method", "lora", "--data-dir", "data")
    for bad in ("bytes", "", "token", "rows,tokens", "--json"):
        code, _, err = qfk(*base, "--mix", "long=0.5,short=0.5", "--mix-by", bad)
        assert code == 2 and "--mix-by" in err, (bad, err)
    code, _, err = qfk(*base, "--dataset", "long", "--mix-by", "tokens")
    assert code != 0 and "--mix-by tokens weighs the datasets of a --mix" in err and "hint: for example: --mix" in err
    code, _, err = qfk(*base, "--mix", "long=0.5,short=0.5", "--mix-by", "tokens", "--no-stats")
    assert code != 0 and "--no-stats" in err
    with pytest.raises(QfkError, match="is not one of rows, tokens"):
        new_recipe(RecipeRequest(method="lora", model="Qwen3-0.6B", mix={"long": 0.5, "short": 0.5}, mix_by="bytes",
                                 data_dir="data", gpu=NO_GPU))
    assert not [p for p in (made / "data").iterdir() if "__" in p.name]  # nothing was written


# ---------------------------------------------------------------------------------------------
# carried like row mixes: train / recipe cp / webui re-make a missing entry, datasets remove, bundles
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_missing_token_mix_entry_is_made_again_from_its_name(made):
    from qwen_factory_kit.launch.webui import _unregistered
    from qwen_factory_kit.recipe.document import load_recipe
    from qwen_factory_kit.recipe.mix import register_mix_entries

    data = made / "data"
    recipe = _recipe(data, {"long": 0.5, "short": 0.5}, mix_by="tokens")
    name = recipe.args["dataset"].split(",")[0]
    before = (data / f"{name}.jsonl").read_bytes()
    reg = Registry(data)
    removal = reg.remove(name, delete_files=True)
    assert not (data / f"{name}.jsonl").exists() and not (data / f"{name}.manifest.json").exists(), removal
    assert _unregistered([name, "nope__t3"], list(reg.read())) == ["nope__t3"]  # webui --recipe: it will be made
    _, made_now = register_mix_entries(load_recipe("mix.yaml"))  # what qfk train, recipe cp and webui --recipe run
    assert made_now == [name] and (data / f"{name}.jsonl").read_bytes() == before
    assert json.loads((data / f"{name}.manifest.json").read_text())["tokens"] is None  # rows known, tokens not measured here
    # registered, its file gone (data copied without it): the check says qfk train makes it; qfk train does
    (data / f"{name}.jsonl").unlink()
    missing = [f for f in check_recipe_findings("mix.yaml") if f.severity == "error"]
    assert missing and "not found" in missing[0].message and "qfk train picks its rows from long again" in missing[0].fix
    _, made_now = register_mix_entries(load_recipe("mix.yaml"))
    assert made_now == [name] and (data / f"{name}.jsonl").read_bytes() == before
    assert register_mix_entries(load_recipe("mix.yaml"))[1] == []  # nothing to make once it is there
    removed = reg.remove("long", delete_files=True)
    assert name in removed.removed and not (data / f"{name}.jsonl").exists()


@pytest.mark.slow
def test_bundle_carries_a_token_mix(made, tmp_path):
    from qwen_factory_kit.recipe.bundle import pack, unpack

    recipe = _recipe(Path("data"), {"long": 0.5, "short": 0.5}, mix_by="tokens")
    name = recipe.args["dataset"].split(",")[0]
    res = pack("mix.yaml", "b.zip")
    assert res["datasets"][name] == {"kind": "picked", "included": False, "manifest": False, "base": "long"}
    members = set(zipfile.ZipFile("b.zip").namelist())
    assert f"data/{name}.jsonl" not in members and "data/long.jsonl" not in members  # no rows travel without --with-data

    out = tmp_path / "elsewhere"
    got = unpack(made / "b.zip", out)
    assert got["datasets"][name]["how"] == "picked" and got["datasets"]["long"]["how"] == "converted"
    assert (out / "data" / f"{name}.jsonl").read_bytes() == (made / "data" / f"{name}.jsonl").read_bytes()
    assert Registry(out / "data").read()[name] == Registry(made / "data").read()[name]
    assert json.loads((out / "data" / f"{name}.manifest.json").read_text())["token_mix"]["base"] == "long"

    # with the data: the base travels, the token mix is picked again from it
    pack("mix.yaml", "d.zip", with_data=True)
    got = unpack(made / "d.zip", tmp_path / "withdata")
    assert got["datasets"][name]["how"] == "picked" and got["datasets"]["long"]["how"] == "included"

    # a bundle whose token-mix record was edited is refused before anything is written
    with zipfile.ZipFile("b.zip") as zf:
        parts = {n: zf.read(n) for n in zf.namelist()}
    meta = json.loads(parts["bundle.json"])
    meta["datasets"][name]["count"] += 1
    parts["bundle.json"] = json.dumps(meta).encode()
    with zipfile.ZipFile("bad.zip", "w") as zf:
        for n, b in parts.items():
            zf.writestr(n, b)
    with pytest.raises(QfkError):
        unpack(made / "bad.zip", tmp_path / "bad")
    assert not (tmp_path / "bad").exists()

    # the base converted again since the pick: not re-makeable, so only --with-data packs it (as data)
    write_jsonl(made / "src" / "long.jsonl", _rows(60, (20, 40), 3, "l"))
    _columns(made / "src" / "long.jsonl", made / "data", "long")
    with pytest.raises(QfkError, match="changed since"):
        pack("mix.yaml", "stale.zip")
    res = pack("mix.yaml", "stale.zip", with_data=True)
    assert res["datasets"][name]["kind"] == "file" and res["datasets"][name]["included"]
    assert any("packed as data only" in w for w in res["warnings"])
    shutil.rmtree(tmp_path / "elsewhere")
    got = unpack(made / "stale.zip", tmp_path / "elsewhere")
    assert (tmp_path / "elsewhere" / "data" / f"{name}.jsonl").read_bytes() == (made / "data" / f"{name}.jsonl").read_bytes()
