"""Section results (plain numbers) -> BENCHMARKS.md: one header, then a table per result."""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any

DASH = "–"


@dataclass(frozen=True)
class Table:
    """How one table of a section reads: a title, a short intro and its columns.

    ``intro`` and every column's format are :meth:`str.format` templates over the section's
    facts (intro) or one row (columns), so each number shown comes from a measurement.
    """

    title: str
    intro: str
    columns: tuple[tuple[str, str], ...]  # (header, template over a row)
    # A result may carry its own ``columns`` (same form) when they depend on what was measured
    # (one per contender); they take the place of these.


def fill(template: str, values: dict[str, Any]) -> str:
    """``template`` filled from ``values``; a missing or None value shows as a dash."""
    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    if any(values.get(name) is None for name in fields):
        return DASH
    return template.format(**values)


def table(spec: Table, result: dict[str, Any]) -> str:
    """One section table as Markdown: ``result`` holds ``facts`` and ``rows``."""
    facts, rows = result.get("facts", {}), result["rows"]
    columns = [tuple(column) for column in result.get("columns") or spec.columns]
    lines = [f"## {spec.title.format(**facts)}", ""]
    if spec.intro:
        lines += [fill(spec.intro, facts), ""]
    lines.append("| " + " | ".join(header for header, _ in columns) + " |")
    lines.append("|" + "---|" * len(columns))
    lines += ["| " + " | ".join(fill(fmt, row) for _, fmt in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def header(facts: dict[str, Any], data: str, quick: bool) -> str:
    """The report's opening: what ran where, with which versions."""
    versions = ", ".join(
        f"{name} {facts[name]}"
        for name in ("torch", "numpy", "pandas", "scikit-learn", "hydra-core", "pricenet")
    )
    lines = [
        "# pricenet benchmarks",
        "",
        f"- date (UTC): {facts['date']}",
        f"- machine: {facts['cores']} cores, {facts['cpu']}, {facts['system']}; "
        f"load average at the end (1/5/15 min): {facts['load']}",
        f"- python {facts['python']}, {versions}; torch threads {facts['torch_threads']}",
        f"- data: {data}" + ("  (--quick: tiny sizes, figures not meaningful)" if quick else ""),
        "- written by `python -m scripts.bench`; every section alternates its contenders",
        "",
    ]
    return "\n".join(lines)


def report(
    specs: dict[str, dict[str, Table]],
    results: dict[str, dict[str, Any]],
    facts: dict[str, Any],
    data: str,
    quick: bool,
) -> str:
    """The whole report: the header and, per section in order, its tables."""
    parts = [header(facts, data, quick)]
    for section, tables in results.items():
        for key, result in tables.items():
            parts.append(table(specs[section][key], result))
    return "\n".join(parts)
