"""How long a generated answer may be, and how many rows to generate at once: bounded by the data.

A fixed ``max_new_tokens`` (4096 in thinking mode) is a trap on a small or untrained model: it
never emits ``<|im_end|>``, so every row runs to the limit (on a CPU, minutes a row). The budget
here is measured on the references with the real Qwen3 tokenizer: the longest response the model
is expected to write in its think mode (think block + answer when it thinks, the answer alone
when the template puts the empty block in the prompt), times :data:`FACTOR`, rounded up to
:data:`ROUND` tokens, never above the mode's ceiling (:func:`..recipe.presets.max_new_tokens`).

* :func:`eval_budget`: the rows ``qfk eval`` predicts (the first ``max_samples`` rows, as
  LLaMA-Factory's loader takes them);
* :func:`training_budget`: a run's training rows (``qfk chat``, ``qfk translate``, ``qfk merge``,
  through :func:`.served.run_budget`);
  the longest rows by characters are tokenised, so a large dataset costs one streaming read;
* :func:`eval_batch`: the eval batch for this machine: on a CPU the batch amortises the per-step
  overhead (measured on the tiny model: 16 rows at once 5x the rows/s of one at a time), as long
  as the KV cache of the whole batch fits in a quarter of the free memory.
"""

from __future__ import annotations

import heapq
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

#: the budget is this many times the longest reference
FACTOR = 1.5
#: rounded up to a multiple of this
ROUND = 32
#: the fewest new tokens a budget allows (a one-word reference still gets room)
FLOOR = 64
#: training rows whose response is tokenised (the longest by characters)
LONGEST_BY_CHARS = 256
#: the largest eval batch chosen on a CPU, and the share of free memory its KV cache may take
CPU_BATCH, CPU_MEMORY_SHARE = 16, 0.25
#: the eval batch a GPU recipe keeps (the recipe builder's)
GPU_BATCH = 4


@dataclass(frozen=True)
class Budget:
    """``max_new_tokens`` for a set of rows, and where it came from."""

    max_new_tokens: int
    ceiling: int                 # the think mode's default, never exceeded
    longest: int | None = None   # the longest reference, in tokens (None: no reference was measured)
    rows: int = 0                # the references measured
    source: str = ""             # what the references were ("the 4 eval rows", "120 training rows")

    @property
    def capped(self) -> bool:
        return self.longest is not None and self.max_new_tokens == self.ceiling and _bound(self.longest) > self.ceiling

    def describe(self) -> str:
        if self.longest is None:
            return f"max_new_tokens {self.max_new_tokens} ({self.source or 'the default for the think mode: no reference to measure'})"
        why = f"{FACTOR:g}x the longest reference, {self.longest} tokens, of {self.source}"
        if self.capped:
            why += f"; capped at the think mode's {self.ceiling}"
        return f"max_new_tokens {self.max_new_tokens} ({why})"

    def as_dict(self) -> dict:
        return {"max_new_tokens": self.max_new_tokens, "ceiling": self.ceiling, "longest_reference": self.longest,
                "references": self.rows, "source": self.source, "factor": FACTOR}


def _bound(longest: int) -> int:
    return max(FLOOR, math.ceil(longest * FACTOR / ROUND) * ROUND)


def expected_text(response: str, enable_thinking: bool | None) -> str:
    """What the model writes for ``response`` in its think mode: the canonical think block and the
    answer when it thinks (a response without reasoning gets the empty block, as the template
    trains it), the answer alone under ``enable_thinking: false``."""
    from ..think import format_response, strip_think

    reasoning, answer = strip_think(response)
    if enable_thinking is False:
        return answer
    return format_response(answer, reasoning)


def budget_for(responses: Iterable[str], enable_thinking: bool | None, *, source: str,
               tokenizer: Any = None) -> Budget:
    """The budget for ``responses`` (dataset responses, think blocks in the kit's form)."""
    from ..recipe import presets

    ceiling = presets.max_new_tokens(enable_thinking)
    texts = [expected_text(r, enable_thinking) for r in responses if isinstance(r, str)]
    if not texts:
        return Budget(ceiling, ceiling, source=source)
    if tokenizer is None:
        from ..lfbridge import load_tokenizer

        tokenizer = load_tokenizer()
    lengths = [len(ids) + 1 for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]  # + <|im_end|>
    longest = max(lengths)
    return Budget(min(ceiling, _bound(longest)), ceiling, longest, len(texts), source)


def _responses(path: Path, entry: dict | None, limit: int | None = None) -> Iterable[str]:
    from ..lint import iter_rows, layout_from
    from .predictions import dataset_turn

    layout = None
    for n, (_, row) in enumerate(iter_rows(path)):
        if limit is not None and n >= limit:
            return
        if not isinstance(row, dict):
            continue
        if layout is None:
            layout = layout_from(entry, row)
        response = dataset_turn(row, layout)[1]
        if isinstance(response, str):
            yield response


def eval_budget(path: Path, entry: dict | None, enable_thinking: bool | None, *, max_samples: int | None = None,
                tokenizer: Any = None) -> tuple[Budget, int]:
    """(budget, rows predicted) for the eval dataset file: its first ``max_samples`` rows."""
    responses = list(_responses(path, entry, max_samples))
    what = f"the {len(responses)} eval row{'s' if len(responses) != 1 else ''}"
    return budget_for(responses, enable_thinking, source=what, tokenizer=tokenizer), len(responses)


def training_budget(datasets: list[str], data_dir: Path, enable_thinking: bool | None, *, tokenizer: Any = None) -> Budget | None:
    """The budget from a run's training datasets (their :data:`LONGEST_BY_CHARS` longest responses);
    None when none of them has a local file."""
    from ..errors import QfkError
    from ..registry import Registry, resolve_file

    try:
        registry = Registry.at(data_dir)
    except QfkError:  # a missing or bad registry: the caller falls back to the default
        return None
    longest: list[tuple[int, int, str]] = []
    seen = 0
    for name in datasets:
        try:
            entry = registry.get(name)
        except QfkError:  # an entry gone since training
            continue
        path = resolve_file(entry, data_dir)
        if path is None or not path.exists():
            continue
        for response in _responses(path, entry):
            seen += 1
            item = (len(response), seen, response)
            if len(longest) < LONGEST_BY_CHARS:
                heapq.heappush(longest, item)
            elif item[0] > longest[0][0]:
                heapq.heapreplace(longest, item)
    if not longest:
        return None
    return budget_for([r for _, _, r in longest], enable_thinking, tokenizer=tokenizer,
                      source=f"{seen} training row{'s' if seen != 1 else ''} ({', '.join(datasets)})")


# ---------------------------------------------------------------------------------------------
# the eval batch
# ---------------------------------------------------------------------------------------------
def kv_bytes_per_token(model: str) -> int | None:
    """Bytes of KV cache one token takes (float32 on a CPU), from the model folder's config.json."""
    path = Path(model) / "config.json"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
        heads = cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
        head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
        return int(cfg["num_hidden_layers"]) * int(heads) * int(head_dim) * 2 * 4
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
        return None


def available_memory() -> int:
    """Free memory in bytes (MemAvailable), or 4 GiB when it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 4 << 30


def eval_batch(model: str, rows: int, tokens_per_row: int, *, gpus: int, memory: int | None = None) -> int:
    """``per_device_eval_batch_size`` for predicting ``rows`` rows of up to ``tokens_per_row``
    tokens (prompt + new): on a GPU the recipe builder's :data:`GPU_BATCH`; on a CPU the largest
    power of two up to :data:`CPU_BATCH` whose KV cache fits in a quarter of the free memory."""
    per_token = kv_bytes_per_token(model) if gpus == 0 else None
    if per_token is None:  # a GPU, or a model whose size is unknown here: the builder's batch
        return GPU_BATCH
    limit = (memory if memory is not None else available_memory()) * CPU_MEMORY_SHARE
    batch = CPU_BATCH
    while batch > 1 and batch * tokens_per_row * per_token > limit:
        batch //= 2
    return min(batch, 1 << max(0, math.ceil(math.log2(max(rows, 1)))))


def describe_worst_case(budget: Budget, rows: int, models: int) -> str:
    """'at most N new tokens (R rows x M per model)'."""
    total = rows * budget.max_new_tokens * models
    per = f"{rows} row{'s' if rows != 1 else ''} x {budget.max_new_tokens}"
    return f"at most {total:,} new tokens ({per}{f' x {models} models' if models > 1 else ''})"

