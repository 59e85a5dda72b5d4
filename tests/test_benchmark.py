"""The benchmark package: its harness and renderer, and a --quick run of every section."""

from __future__ import annotations

import importlib
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from conftest import REPO_ROOT


def bench(module: str = "") -> ModuleType:
    """``scripts.bench[.module]``, imported as ``python -m scripts.bench`` does (from the root)."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    return importlib.import_module("scripts.bench" + (f".{module}" if module else ""))


def tables(markdown: str) -> dict[str, list[list[str]]]:
    """Section title -> the rows (cells) of its table, header excluded."""
    found: dict[str, list[list[str]]] = {}
    for block in markdown.split("\n## ")[1:]:
        title, _, body = block.partition("\n")
        rows = [line.strip("|").split("|") for line in body.splitlines() if line.startswith("|")]
        found[title.strip()] = [[c.strip() for c in row] for row in rows[2:]]
    return found


def test_only_a_full_run_writes_the_committed_report_by_default():
    main = bench("__main__")
    every = list(bench().SECTIONS)
    assert main.report_path(None, False, every) == REPO_ROOT / "BENCHMARKS.md"
    assert main.report_path(None, True, every) == REPO_ROOT / "outputs/benchmarks/quick.md"
    assert main.report_path(None, False, ["speed"]) == REPO_ROOT / "outputs/benchmarks/partial.md"
    assert main.report_path(Path("x.md"), True, every) == Path("x.md")


def test_a_merge_keeps_when_each_other_section_was_last_measured():
    dates = bench("__main__").dates
    line = "T0; tables, packed re-measured T1; tabm re-measured T2"
    assert dates(line, ["packed", "tabm"], "T3") == (
        "T0; tables re-measured T1; packed, tabm re-measured T3"
    )
    assert dates("T0", ["speed"], "T1") == "T0; speed re-measured T1"


def test_quick_figures_over_the_committed_report_are_refused(capsys):
    committed = REPO_ROOT / "BENCHMARKS.md"
    before = committed.read_bytes() if committed.exists() else None
    with pytest.raises(SystemExit) as caught:
        bench("__main__").main(["--quick", "--out", str(committed)])
    assert caught.value.code == 2
    assert "refusing to write quick-mode figures" in capsys.readouterr().err
    assert (committed.read_bytes() if committed.exists() else None) == before


def test_an_unknown_section_is_one_error_line(capsys):
    with pytest.raises(SystemExit) as caught:
        bench("__main__").main(["--quick", "--only", "speed,nonsense"])
    assert caught.value.code == 2
    assert "unknown section(s) ['nonsense']" in capsys.readouterr().err


def test_alternation_interleaves_contenders_and_takes_medians(monkeypatch):
    harness = bench("harness")
    calls: list[str] = []
    ticks = iter(range(1000))
    monkeypatch.setattr(harness.time, "perf_counter", lambda: next(ticks))
    got = harness.alternate({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3)
    assert calls == ["a", "b"] * 3
    assert got == {"a": 1, "b": 1}  # each call spans one tick of the fake clock


def test_a_child_process_reports_its_own_peak_memory(tmp_path):
    harness = bench("harness")
    small = harness.python(["-c", "print(1)"], tmp_path)
    large = harness.python(
        ["-c", "x = bytearray(200_000_000); x[::4096] = b'1' * len(x[::4096])"], tmp_path
    )
    assert small["stdout"].strip() == "1"
    assert large["peak_mb"] - small["peak_mb"] > 150
    assert large["wall_s"] > 0 and large["cpu_s"] >= 0


def test_the_renderer_fills_every_cell_from_the_numbers():
    render = bench("render")
    spec = render.Table(
        "Speed",
        "Best of {repeats}: **{ratio:.2f}x**.",
        (("case", "{name}"), ("s", "{seconds:.2f}"), ("spread", "{lo:.1f}–{hi:.1f}")),
    )
    result = {
        "facts": {"repeats": 3, "ratio": 1.2345},
        "rows": [
            {"name": "packed", "seconds": 0.5, "lo": 1, "hi": 2},
            {"name": "diverged", "seconds": None, "lo": 1, "hi": 2},
        ],
    }
    text = render.table(spec, result)
    assert "Best of 3: **1.23x**." in text
    assert tables("\n" + text)["Speed"] == [
        ["packed", "0.50", "1.0–2.0"],
        ["diverged", "–", "1.0–2.0"],
    ]


def test_machine_facts_name_no_path_and_no_host():
    facts = bench("harness").machine()
    header = bench("render").header(facts, "synthetic (600 rows)", quick=True)
    assert f"{facts['cores']} cores" in header and f"torch {facts['torch']}" in header
    assert socket.gethostname() not in header
    assert not re.search(r"(^|\s)/\w", header), header


# Section title -> rows in --quick mode.
EXPECTED_ROWS = {
    "Where a training step's time goes": 6,
    "Training speed": 2,
    "Time to accuracy": 2,
    "Accuracy": 10,
    "End to end": 6,
    "Why the tutorial scored so low": 7,
    "Checkpoints by time": 3,
    "The recommended recipe: L-BFGS vs Adam": 3,
    "Reading and validating a table": 4,
    "Tables from outside the project": 12,
    "Tabular suite: the tables": 2,
    "Tabular suite: held-out accuracy": 4,
    "Tabular suite: time": 3,
    "Tabular suite: pricenet against the best tree per table": 6,  # 3 recipes x 2 tables
    "Categorical features with many values: the tables": 1,
    "Categorical features with many values: held-out accuracy": 3,  # mpg, mean, rank
    "Categorical features with many values: time": 2,
    "ONNX parity": 2,
    "The service": 2,
    "The exported graph": 3,
    "Calibration": 2,
    "Sweeps": 5,
    "Search": 4,
    "Packed models: the bare training loop": 5,
    "Packed models: whole runs": 4,
    "Packed models: where a run's time goes": 12,
    "TabM: what a fit costs on CPU": 6,  # k = 1, 2, 4, 8, 16, 32
    "TabM: a step by architecture, embedding and fits packed": 11,
    "TabM: whole fits to early stopping": 5,  # MLP, TabM, experiment=tabular at k 4, 8, 2
}


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[str, dict]:
    out = tmp_path_factory.mktemp("bench") / "quick.md"
    done = subprocess.run(
        [sys.executable, "-m", "scripts.bench", "--quick", "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, "PRICENET_ROOT": str(out.parent)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out.read_text(), json.loads(out.with_suffix(".json").read_text())


@pytest.mark.slow
def test_quick_run_gives_every_section_its_table(quick):
    report, _ = quick
    found = tables(report)
    assert set(found) == set(EXPECTED_ROWS)
    for title, count in EXPECTED_ROWS.items():
        assert len(found[title]) == count, title
        for row in found[title]:
            assert row[0], (title, row)
            assert re.search(r"\d", " ".join(row[1:])), (title, row)


@pytest.mark.slow
def test_quick_run_keeps_the_raw_numbers_and_names_no_machine_path(quick):
    report, raw = quick
    assert list(raw["sections"]) == list(bench().SECTIONS)
    packed = raw["sections"]["packed"]
    assert {(r["batch"], r["early_stopping"]) for r in packed["runs"]["rows"]} == {
        (8, "yes"),
        (8, "no"),
        (64, "yes"),
        (64, "no"),
    }
    assert all(r["cv_s"] > 0 and r["ratio"] > 0 for r in packed["runs"]["rows"])
    assert str(REPO_ROOT) not in report and str(REPO_ROOT.parent) not in report
    assert socket.gethostname() not in report


@pytest.mark.slow
def test_accuracy_sets_pricenet_beside_scikit_learn_on_the_same_folds(quick):
    rows = tables(quick[0])["Accuracy"]
    names = [row[0] for row in rows]
    for name in (
        "pricenet experiment=recommended",
        "pricenet default config",
        "HistGradientBoosting",
    ):
        assert name in names
    for row in rows:
        assert re.fullmatch(r"\d+\.\d\d ± \d+\.\d\d", row[1]), row
        assert row[2] == "3", row  # one figure per fold of the 3-fold quick CV


@pytest.mark.slow
def test_outside_tables_choose_one_general_recipe_per_table(quick):
    rows = tables(quick[0])["Tables from outside the project"]
    for dataset in ("wine", "breast_cancer"):
        mine = [row for row in rows if row[0].startswith(dataset)]
        assert len(mine) == 6, dataset
        assert sum(row[2] == "yes" for row in mine) == 1, dataset
