"""Append-only jsonl files that survive interruption: what the evaluation results, the curation outputs and the LLM
reply caches are written as, so that a killed run resumes from what it had finished."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path


def read_jsonl(path: str | Path | None) -> list[dict]:
    """The objects of a jsonl file, in order; a line cut by an interrupted write (or anything but an object) is
    skipped. A missing file (or None) reads as empty."""
    rows = []
    if path is None or not Path(path).is_file():
        return rows
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _ends_mid_line(path: Path) -> bool:
    if not path.is_file() or path.stat().st_size == 0:
        return False
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) != b"\n"


def append_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """Appends one line per row (creating the file and its folder), starting on a fresh line when the file's last
    line was cut by an interrupted write, so that the cut line alone is lost. Not thread-safe: callers lock."""
    rows = list(rows)
    if not rows:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torn = _ends_mid_line(path)
    with open(path, "a", encoding="utf-8") as handle:
        if torn:
            handle.write("\n")
        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
