"""Every fix qfk recipe check prints passes when applied.

For each finding whose fix is a ``key=value`` override, a recipe that triggers it: the fix's overrides
are read from its text, applied the way ``qfk recipe check R.yaml key=value`` takes them (the recipe
written as YAML, loaded back with the overrides on top) and the rule runs again. The finding is gone,
and the rule reports nothing new that is worse than ok/info. Fixes that are not overrides (a command
to install or run, a choice only the user can make) are listed in EXEMPT with the reason.
"""

from __future__ import annotations

import enum
import json
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from qwen_factory_kit import lfbridge
from qwen_factory_kit.recipe import check
from qwen_factory_kit.recipe.check import Machine
from qwen_factory_kit.recipe.document import load_recipe, recipe_datasets
from qwen_factory_kit.recipe.mix import ensure_mix_entries
from qwen_factory_kit.recipe.request import DatasetFacts
from qwen_factory_kit.registry import build_entry

BARE = Machine(cuda=False)
GPU = Machine(cuda=True, packages=frozenset(check.OPTIONAL_PACKAGES))
NO_BNB = Machine(cuda=True, packages=frozenset({"flash_attn", "deepspeed"}))
NO_FA = Machine(cuda=True, packages=frozenset({"bitsandbytes", "deepspeed"}))

#: one override: key=value, the value quoted for a shell or running to a space, ';' or ')'
OVERRIDE = re.compile(r"""(?<![\w./-])[a-z_][a-z0-9_]*=(?:"[^"]*"|'[^']*'|[^\s;)]+)""")


def fix_overrides(fix: str) -> list[str]:
    """The ``key=value`` items of the fix's first alternative that has any (alternatives: ', or ' / '; or '),
    as a shell would pass them to ``qfk recipe check R.yaml``."""
    for alternative in re.split(r"[,;]? or ", fix):
        items = [shlex.split(item)[0].rstrip(",") for item in OVERRIDE.findall(alternative)]
        if items:
            return items
    return []


def apply(args: dict, overrides: list[str], tmp_path: Path) -> dict:
    recipe = tmp_path / "applied.yaml"
    recipe.write_text(yaml.safe_dump(args, sort_keys=False))
    return load_recipe(recipe, overrides)


# --------------------------------------------------------------------------------------------
# the world the rules look at: a registry, facts, folders (all in tmp_path, the working folder)
# --------------------------------------------------------------------------------------------
class Strategy(enum.Enum):
    NO = "no"
    STEPS = "steps"


FIELDS = {"lora_rank": int, "learning_rate": float, "eval_strategy": Strategy | str}


def facts(name="med", mode="reasoning", empty_style="none") -> DatasetFacts:
    return DatasetFacts(name, {"file_name": "x.jsonl", "formatting": "alpaca"}, 10, mode, empty_style, "test", Path("x.jsonl"))


def registry(tmp_path: Path) -> str:
    """medical_r1 (3 reasoning rows), finetome (direct), pref (ranking)."""
    d = tmp_path / "data"
    d.mkdir(exist_ok=True)
    rows = [{"instruction": f"q{i}", "input": "", "output": f"<think>\nwhy {i}\n</think>\n\nanswer {i}"} for i in range(3)]
    (d / "medical_r1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "finetome.jsonl").write_text(json.dumps({"instruction": "q", "input": "", "output": "a"}) + "\n")
    (d / "pref.jsonl").write_text(json.dumps({"instruction": "q", "input": "", "chosen": "a", "rejected": "b"}) + "\n")
    info = {"medical_r1": build_entry("medical_r1.jsonl"), "finetome": build_entry("finetome.jsonl"),
            "pref": build_entry("pref.jsonl", ranking=True), "big": {**build_entry("medical_r1.jsonl"), "num_samples": 9}}
    (d / "dataset_info.json").write_text(json.dumps(info))
    return str(d)


def folder(tmp_path: Path, *files: str) -> str:
    out = tmp_path / "saves" / "run"
    out.mkdir(parents=True)
    for f in files:
        (out / f).mkdir() if f.startswith("checkpoint-") else (out / f).write_text("x")
    return str(out)


def datasets_rule(args: dict) -> list:
    return check.check_datasets(args)[0]


def mix_rule(args: dict) -> list:
    """check_mix on the facts check_datasets finds, after registering the __nN entries as qfk train does."""
    ensure_mix_entries(recipe_datasets(args), args["dataset_dir"])
    return check.check_mix(args, check.check_datasets(args)[1])


def template_rule(args: dict) -> list:
    return check.check_template(args, check._model(args))


def think_rule(*fs: DatasetFacts) -> Callable[[dict], list]:
    return lambda args: check.check_think(args, list(fs), check._model(args))


def cutoff_rule(rows: list[tuple[int, int]]) -> Callable[[dict], list]:
    """check_cutoff over rows of (total tokens, tokens up to </think>), measured as qfk stats would."""
    def measure(args, fact, cutoff, max_rows):
        think = [i for i, (_, close) in enumerate(rows) if close > cutoff]
        answer = [i for i, (total, close) in enumerate(rows) if close <= cutoff < total]
        totals = sorted(t for t, _ in rows)
        return {"rows": len(rows), "rows_losing_think_close": think, "rows_losing_answer": answer,
                "recommended_cutoff_len": 512, "total": {"p99": totals[-2], "max": totals[-1]}}

    return lambda args: check.check_cutoff(args, [facts()], measure=measure)


def set_aside_rule(machine: Machine) -> Callable[[dict], list]:
    return lambda args: check.set_aside_findings(args, lfbridge.parseable_here(args, cuda=machine.cuda)[1], machine)


def machine_rule(machine: Machine) -> Callable[[dict], list]:
    return lambda args: check.check_machine(args, machine=machine)


@dataclass
class Case:
    rule: Callable[[dict], list]
    args: dict
    check: str     # the finding id
    severity: str
    text: str
    clean: bool = False  # the fix leaves nothing of this check worse than ok/info, even what was there before


REASONING, DIRECT, MIXED = facts(), facts("chat", "direct", "omit"), [facts(), facts("chat", "direct", "omit")]
LONG_ROWS = [(300, 200), (900, 800), (2100, 1900)]  # the longest needs 2304; p99 (900) would cut it again
CASES: dict[str, Callable[[Path], Case]] = {
    # keys: value types
    "yaml-boolean": lambda t: Case(lambda a: check.check_types(a, FIELDS), {"eval_strategy": False}, "keys", "error", "eval_strategy"),
    "quoted-number": lambda t: Case(lambda a: check.check_types(a, FIELDS), {"lora_rank": "8"}, "keys", "error", "lora_rank"),
    "quoted-float": lambda t: Case(lambda a: check.check_types(a, FIELDS), {"learning_rate": "5e-6"}, "keys", "error", "learning_rate"),
    # keys: what this machine cannot parse
    "shipped-deepspeed-missing": lambda t: Case(set_aside_rule(GPU), {"deepspeed": "deepspeed/ds_z3_config.json"}, "paths", "error",
                                                "not found"),
    # datasets
    "unknown-dataset": lambda t: Case(datasets_rule, {"dataset": "medical,finetome", "dataset_dir": registry(t)}, "datasets", "error",
                                      "dataset 'medical' is not in"),
    "unknown-eval-dataset": lambda t: Case(datasets_rule, {"dataset": "medical_r1", "eval_dataset": "fintome",
                                                           "dataset_dir": registry(t)}, "datasets", "error", "dataset 'fintome'"),
    "ranking-data-in-sft": lambda t: Case(datasets_rule, {"dataset": "pref", "dataset_dir": registry(t)}, "ranking", "error", "SFT data"),
    "sft-data-in-dpo": lambda t: Case(datasets_rule, {"stage": "dpo", "dataset": "medical_r1", "dataset_dir": registry(t)}, "ranking",
                                      "error", "ranking data"),
    # mix
    "upsampled-mix-entry": lambda t: Case(mix_rule, {"dataset": "medical_r1__n10,finetome", "dataset_dir": registry(t)}, "mix", "warn",
                                          "repeats about 3.3x"),
    "upsampled-by-hand": lambda t: Case(mix_rule, {"dataset": "big", "dataset_dir": registry(t)}, "mix", "warn", "repeats about 3.0x"),
    # template
    "no-template": lambda t: Case(template_rule, {"model_name_or_path": "Qwen3-4B"}, "template", "error", "no template"),
    "no-template-2507": lambda t: Case(template_rule, {"model_name_or_path": "Qwen3-4B-Instruct-2507"}, "template", "error", "no template"),
    "other-template": lambda t: Case(template_rule, {"model_name_or_path": "Qwen3-4B", "template": "llama3"}, "template", "error",
                                     "not a Qwen3 template"),
    "thinking-template-on-2507": lambda t: Case(template_rule, {"model_name_or_path": "Qwen3-4B-Instruct-2507", "template": "qwen3"},
                                                "template", "error", "non-thinking only"),
    "nothink-on-hybrid": lambda t: Case(template_rule, {"model_name_or_path": "Qwen3-4B", "template": "qwen3_nothink"}, "template",
                                        "warn", "think switch"),
    # think
    "reasoning-stripped": lambda t: Case(think_rule(REASONING), {"model_name_or_path": "Qwen3-4B", "template": "qwen3",
                                                                 "enable_thinking": False}, "think", "error", "strips"),
    "mixed-stripped": lambda t: Case(think_rule(*MIXED), {"model_name_or_path": "Qwen3-4B", "template": "qwen3",
                                                          "enable_thinking": False}, "think", "error", "strips"),
    "direct-with-thinking": lambda t: Case(think_rule(DIRECT), {"model_name_or_path": "Qwen3-4B", "template": "qwen3",
                                                                "enable_thinking": True}, "think", "warn", "skip thinking"),
    "mixed-with-thinking": lambda t: Case(think_rule(*MIXED), {"model_name_or_path": "Qwen3-4B", "template": "qwen3",
                                                               "enable_thinking": True}, "think", "warn", "empty think blocks"),
    "nothink-on-reasoning": lambda t: Case(think_rule(REASONING), {"model_name_or_path": "Qwen3-4B", "template": "qwen3_nothink"},
                                           "think", "error", "as plain text"),
    "nothink-on-mixed-2507": lambda t: Case(think_rule(*MIXED), {"model_name_or_path": "Qwen3-4B-Instruct-2507",
                                                                 "template": "qwen3_nothink"}, "think", "error", "as plain text"),
    "explicit-empty-blocks": lambda t: Case(think_rule(facts("chat", "direct", "explicit")),
                                            {"model_name_or_path": "Qwen3-4B", "template": "qwen3_nothink"}, "think", "error",
                                            "explicit empty <think>"),
    "reasoning-on-instruct-2507": lambda t: Case(think_rule(REASONING), {"model_name_or_path": "Qwen3-4B-Instruct-2507",
                                                                         "template": "qwen3"}, "think", "error", "never thinks"),
    "direct-on-thinking-2507": lambda t: Case(think_rule(DIRECT), {"model_name_or_path": "Qwen3-30B-A3B-Thinking-2507",
                                                                   "template": "qwen3", "enable_thinking": False}, "think", "error",
                                              "always thinks"),
    # cutoff
    "cutoff-cuts-think": lambda t: Case(cutoff_rule(LONG_ROWS), {"cutoff_len": 1024, "dataset": "med"}, "cutoff", "error",
                                        "before </think>"),
    "cutoff-cuts-answer": lambda t: Case(cutoff_rule([(300, 200), (2100, 1000)]), {"cutoff_len": 1024, "dataset": "med"}, "cutoff",
                                         "warn", "cuts the answer"),
    # output
    "no-output-dir": lambda t: Case(check.check_output, {"model_name_or_path": "Qwen3-4B"}, "output", "error", "no output_dir"),
    "export-over-a-model": lambda t: Case(check.check_output, {"export_dir": folder(t, "model.safetensors")}, "output", "warn",
                                          "overwrites it"),
    "predictions-replaced": lambda t: Case(check.check_output, {"do_predict": True, "output_dir": folder(t, "generated_predictions.jsonl")},
                                           "output", "warn", "will be replaced"),
    "overwrite-old-run": lambda t: Case(check.check_output, {"output_dir": folder(t, "trainer_log.jsonl"), "overwrite_output_dir": True},
                                        "output", "warn", "overwritten"),
    "silent-resume": lambda t: Case(check.check_output, {"output_dir": folder(t, "checkpoint-20")}, "output", "warn", "RESUMES"),
    "finished-model": lambda t: Case(check.check_output, {"output_dir": folder(t, "adapter_model.safetensors")}, "output", "error",
                                     "already exists"),
    "appended-log": lambda t: Case(check.check_output, {"output_dir": folder(t, "trainer_log.jsonl")}, "output", "warn", "appended"),
    # machine and paths
    # on a machine without CUDA (recipe/cpu.py): the overrides of the gpu error run the recipe there
    "bf16-on-cpu": lambda t: Case(machine_rule(BARE), {"bf16": True}, "gpu", "error", "bf16: true (bf16 mixed precision"),
    "qlora-on-cpu": lambda t: Case(machine_rule(BARE), {"quantization_bit": 4, "quantization_method": "bnb", "optim": "paged_adamw_8bit"},
                                   "gpu", "error", "needs a CUDA GPU", clean=True),
    "deepspeed-on-cpu": lambda t: Case(machine_rule(BARE), {"deepspeed": "ds.json", "bf16": True}, "gpu", "error",
                                       "deepspeed: ds.json (DeepSpeed needs GPUs)"),
    "kernels-on-cpu": lambda t: Case(machine_rule(BARE), {"enable_liger_kernel": True, "use_unsloth": True, "flash_attn": "fa3",
                                                          "pure_bf16": True, "tf32": True}, "gpu", "error", "use_unsloth: true"),
    "fp16-on-cpu": lambda t: Case(machine_rule(BARE), {"fp16": True, "flash_attn": "fa2"}, "gpu", "warn", "fp16: true"),
    "qlora-without-bitsandbytes": lambda t: Case(machine_rule(NO_BNB), {"quantization_bit": 4, "optim": "paged_adamw_8bit"}, "gpu",
                                                 "warn", "quantization_bit needs bitsandbytes", clean=True),
    "paged-optim-without-bitsandbytes": lambda t: Case(machine_rule(NO_BNB), {"optim": "paged_adamw_8bit"}, "gpu", "warn",
                                                       "comes from bitsandbytes"),
    "fa2-not-installed": lambda t: Case(machine_rule(NO_FA), {"flash_attn": "fa2"}, "gpu", "warn", "flash-attn is not installed"),
    "cpu-bf16": lambda t: Case(machine_rule(GPU), {"use_cpu": True, "bf16": True}, "gpu", "warn", "bf16 on a CPU"),
    "spaced-output-dir": lambda t: Case(machine_rule(GPU), {"output_dir": "saves/my run", "deepspeed": "ds.json"}, "paths", "error",
                                        "spaces"),
    "remote-code": lambda t: Case(machine_rule(GPU), {"trust_remote_code": True}, "paths", "warn", "trust_remote_code"),
    # sampling
    "sampling-not-set": lambda t: Case(check.check_sampling, {"do_predict": True, "enable_thinking": False}, "sampling", "warn",
                                       "not Qwen3's"),
    "greedy": lambda t: Case(check.check_sampling, {"do_predict": True, "do_sample": False}, "sampling", "warn", "greedy"),
}

#: findings whose fix is not an override, and why (check id, text of the message)
EXEMPT = {
    ("keys", "is not a valid value (LLaMA-Factory expects int)"): "lora_rank: 'x': the value meant is the user's; the fix names the types",
    ("keys", "LLaMA-Factory rejects the recipe: Some keys"): "an unknown key must be removed: an override can only set it",
    ("keys", "LLaMA-Factory rejects the recipe"): "a rejected value: LLaMA-Factory's message names the key and what it takes",
    ("keys", "parser exited"): "a command: llamafactory-cli prints the parser's message",
    ("gpu", "DeepSpeed, which is not installed"): "a command: pip install deepspeed",
    ("paths", "deepspeed config"): "a config the kit does not ship: which one is the user's choice (the fix lists the shipped ones)",
    ("datasets", "names no dataset"): "which dataset is the user's choice (qfk datasets list)",
    ("datasets", "Cannot open"): "where the data is: run from its folder or set dataset_dir",
    ("datasets", "not registered yet"): "a command: qfk train registers the mix entry (--dry-run for llamafactory-cli)",
    ("datasets", "is not in"): "no registered name is close: a command registers it (qfk convert / qfk datasets add)",
    ("datasets", "NAME: ..."): "the registry's own findings (file missing, broken entry): commands such as qfk datasets remove",
    ("template", "not a known Qwen3 model"): "which model is the user's choice (qfk recipe new --list-models)",
    ("think", "hold no responses"): "data without responses has no think mode: nothing to set until it has",
    ("think", "never thinks / always thinks (local model)"): "a local 2507 model has no hybrid sibling the kit can name",
    ("think", "explicit empty <think> (Instruct-2507)"): "a command: convert again with --empty-think omit",
    ("paths", "spaces (a file that exists)"): "renaming on disk (overrides are given for the outputs that do not exist yet)",
    ("paths", "adapter ... does not exist yet"): "a command: train first (qfk train RECIPE)",
    ("mix", "repeats (fewer rows than datasets)"): "a command: qfk recipe new ... --mix-total",
    ("cutoff", "filter alternative"): "a command: qfk datasets filter NAME --max-tokens CUTOFF (the first alternative is tested)",
}


@pytest.mark.parametrize("name", list(CASES))
def test_the_fix_passes_when_applied(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    case = CASES[name](tmp_path)
    before = case.rule(case.args)
    found = [f for f in before if f.id == case.check and f.severity == case.severity and case.text in f.text]
    assert len(found) == 1, before
    overrides = fix_overrides(found[0].fix)
    assert overrides, f"no key=value in the fix: {found[0].fix}"
    after = case.rule(apply(case.args, overrides, tmp_path))
    mine = [f for f in after if f.id == case.check]
    assert found[0].text not in [f.text for f in mine], (overrides, after)
    known = set() if case.clean else {f.text for f in before if f.severity in ("warn", "error")}
    assert [f for f in mine if f.severity in ("warn", "error") and f.text not in known] == [], (overrides, after)


@pytest.mark.parametrize("fix,want", [
    ("cutoff_len=2304 (holds every row), or drop them: qfk datasets filter m --max-tokens 2048, then dataset=m__max2048",
     ["cutoff_len=2304"]),
    ("pip install bitsandbytes, or quantization_bit=null optim=adamw_torch (LoRA)", ["quantization_bit=null", "optim=adamw_torch"]),
    ("eval_strategy=\"'no'\" on the command line (YAML ...: eval_strategy: \"no\")", ["eval_strategy='no'"]),
    ("dataset=a__n20,b__n40 (the same proportions at 60 rows per epoch; qfk train registers them), or ...",
     ["dataset=a__n20,b__n40"]),
    ("output_dir=saves/run-2, or overwrite_output_dir=true to replace it", ["output_dir=saves/run-2"]),
    ("pip install deepspeed (on the GPU machine)", []),
])
def test_fix_overrides_reads_the_first_alternative(fix, want):
    assert fix_overrides(fix) == want


@pytest.mark.parametrize("finding", [
    check.check_types({"lora_rank": "x"}, FIELDS)[0],
    check.parser_finding(lfbridge.Rejection("Some keys are not used by the HfArgumentParser: ['foo']", "unknown-key"), "train", ""),
    check.parser_finding(lfbridge.Rejection("2", "exit"), "train", ""),
    check.check_template({"model_name_or_path": "m", "template": "qwen3"}, None)[0],
    check._undefined("zzz", {"medical_r1": {}}, Path("data/dataset_info.json"), {"dataset": "zzz"}),
    check._undefined("medical_r1__n5", {"medical_r1": {}}, Path("data/dataset_info.json"), {"dataset": "medical_r1__n5"}),
    check.check_machine({"model_name_or_path": "."}, machine=GPU, recipe_path="my recipes/r.yaml")[0],
    check.check_machine({"do_predict": True, "adapter_name_or_path": "saves/never"}, machine=GPU)[0],
], ids=lambda f: f"{f.id}: {f.message[:40]}")
def test_exempt_fixes_hold_no_override(finding):
    """The exempt findings (a sample that needs no data) really offer a command or a choice, not a key=value to apply."""
    assert finding.fix and fix_overrides(finding.fix) == []


# --------------------------------------------------------------------------------------------
# the cutoff fix on real rows, through the CLI
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_cutoff_fix_passes_on_the_real_medical_rows(real_samples, tmp_path, monkeypatch, qfk):
    """200 real medical rows at cutoff_len 2048: row 196 loses </think>; the printed fix (p99 would
    cut it again) makes qfk recipe check pass."""
    monkeypatch.chdir(tmp_path)
    src = real_samples / "medical_r1" / "val_sample.jsonl"
    code, _, err = qfk("convert", "medical-r1", str(src), "--name", "medical_r1")
    assert code == 0, err
    # recipe new would choose a cutoff that holds every row: ask for the old 2048 explicitly
    code, _, err = qfk("recipe", "new", "--model", "Qwen3-4B", "--method", "lora", "--dataset", "medical_r1", "-o", "med.yaml",
                       "--cutoff-len", "2048", "use_cpu=true", "bf16=false")
    assert code == 0, err

    def cutoff(*overrides: str):
        code, out, err = qfk("recipe", "check", "med.yaml", *overrides, "--json")
        assert code in (0, 1), err
        return [f for f in json.loads(out)["findings"] if f["id"] == "cutoff"]

    (cut,) = cutoff()
    assert cut["severity"] == "error" and "cutoff_len 2048 cuts" in cut["message"] and "196" in cut["message"]
    assert "qfk datasets filter medical_r1 --max-tokens 2048, then dataset=medical_r1__max2048" in cut["fix"]
    overrides = fix_overrides(cut["fix"])
    assert len(overrides) == 1 and overrides[0].startswith("cutoff_len=") and int(overrides[0].split("=")[1]) % 256 == 0
    (after,) = cutoff(*overrides)
    assert after["severity"] == "ok", after
