"""Rows of a registered dataset, re-emitted as they are (what ``qfk datasets filter`` runs).

The source is the file (or folder) of a dataset_info.json entry already in LLaMA-Factory's Alpaca or
ShareGPT format; every row is written unchanged, so the streaming core does what a filter needs:
``max_tokens`` rejects the long rows, and the counts, rejects file, manifest (with the source's
sha256) and atomic writes are the core's. The output is registered with the source entry's shape
(:meth:`Registered.entry`: formatting, columns, tags, ranking), and its rows are measured with it.
"""

from __future__ import annotations

from typing import Any, Iterable

from ..io.sources import ResolvedSource, table_files
from ..lfformat import ALPACA_DEFAULTS, SHAREGPT_TAGS
from .contract import Converter, Reject, TableSource


class Registered(Converter):
    name = "registered"
    summary = "rows of a registered Alpaca/ShareGPT dataset, as they are (qfk datasets filter)"

    def __init__(self, *, entry: dict, dataset: str, new_name: str, **kw: Any):
        super().__init__(dataset=dataset, **kw)
        self.source_entry = entry
        self.new_name = new_name
        self.formatting = entry.get("formatting", "alpaca")  # instance values override the class defaults
        self.ranking = bool(entry.get("ranking", False))

    def open(self, src: ResolvedSource, *, split: str | None, encoding: str | None) -> TableSource:
        return TableSource(table_files(src, split=None, encoding=encoding))  # every file, as LLaMA-Factory loads them

    def default_name(self, src: ResolvedSource) -> str:
        return self.new_name

    def convert(self, row: dict) -> list[dict]:
        if not isinstance(row, dict):
            raise Reject("wrong_type", f"a row must be a JSON object, got {type(row).__name__}")
        return [row]

    def columns(self) -> dict:
        default = {"messages": "conversations"} if self.formatting == "sharegpt" else dict(ALPACA_DEFAULTS)
        return dict(self.source_entry.get("columns") or default)

    def tags(self) -> dict | None:
        if self.formatting != "sharegpt":
            return None
        return dict(self.source_entry.get("tags") or SHAREGPT_TAGS)

    def entry(self, file_name: str = "rows.jsonl") -> dict:
        """The source entry with ``file_name`` replaced (its key order kept; ``file_sha1`` dropped)."""
        out = {k: v for k, v in self.source_entry.items() if k != "file_sha1"}
        out["file_name"] = file_name
        return out

    def responses(self, out: dict) -> Iterable[str]:
        cols = self.columns()
        if self.formatting == "sharegpt":
            tags = self.source_entry["tags"] if "tags" in self.source_entry else SHAREGPT_TAGS  # a block replaces the defaults
            role, content, assistant = tags.get("role_tag"), tags.get("content_tag"), tags.get("assistant_tag")
            for msg in out.get(cols.get("messages", "conversations")) or ():
                if isinstance(msg, dict) and msg.get(role) == assistant and isinstance(msg.get(content), str):
                    yield msg[content]
            return
        response = out.get(cols.get("response", "output"))
        if isinstance(response, str):
            yield response
        for pair in out.get(cols.get("history") or "history") or ():
            if isinstance(pair, (list, tuple)) and len(pair) == 2 and isinstance(pair[1], str):
                yield pair[1]
