"""The benchmark's --quick mode: every section and contender gets a figure (no timing asserted)."""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

NUMBER = re.compile(r"\d+(\.\d+)?")


def tables(markdown: str) -> dict[str, list[list[str]]]:
    """Section title -> the rows (cells) of its table, header excluded."""
    found: dict[str, list[list[str]]] = {}
    for block in markdown.split("\n## ")[1:]:
        title, _, body = block.partition("\n")
        rows = [line.strip("|").split("|") for line in body.splitlines() if line.startswith("|")]
        found[title.strip()] = [[c.strip() for c in row] for row in rows[2:]]
    return found


@functools.cache
def load_script():
    """scripts/benchmark.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location(
        "benchmark", REPO_ROOT / "scripts" / "benchmark.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["benchmark"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_only_a_full_run_writes_the_committed_report_by_default():
    bench = load_script()
    every = list(bench.SECTIONS)
    assert bench.report_path(None, False, every) == REPO_ROOT / "BENCHMARKS.md"
    assert bench.report_path(None, True, every) == REPO_ROOT / "outputs/benchmarks/quick.md"
    assert bench.report_path(None, False, ["speed"]) == REPO_ROOT / "outputs/benchmarks/partial.md"
    assert bench.report_path(Path("x.md"), True, every) == Path("x.md")


def test_quick_figures_over_the_committed_report_are_refused(capsys):
    bench = load_script()
    committed = REPO_ROOT / "BENCHMARKS.md"
    before = committed.read_bytes() if committed.exists() else None
    with pytest.raises(SystemExit) as caught:
        bench.main(["--quick", "--out", str(committed)])
    assert caught.value.code == 2
    assert "refusing to write quick-mode figures" in capsys.readouterr().err
    assert (committed.read_bytes() if committed.exists() else None) == before


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("bench") / "BENCHMARKS.md"
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "benchmark.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PRICENET_ROOT": str(out.parent)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out.read_text()


@pytest.mark.slow
def test_header_names_date_machine_and_versions(report):
    assert re.search(r"- date: \d{4}-\d\d-\d\dT", report)
    assert re.search(r"- machine: \d+ cores, ", report)
    assert "torch " in report and "scikit-learn " in report


# Section title (or its start) -> rows in --quick mode.
EXPECTED_ROWS = {
    "Where a training step's time goes": 6,
    "Training speed": 2,
    "Time to accuracy": 2,
    "Accuracy": 10,
    "End to end": 2,
    "Why the tutorial scored 27%": 7,
    "Checkpoints by time": 3,
    "The recommended recipe: L-BFGS vs Adam": 3,
    "Reading and validating a CSV": 2,
    "Tables from outside the project": 12,
    "ONNX parity": 2,
    "The service": 2,
    "The exported graph": 3,
    "Calibration": 2,
    "Cross-validation at the cost of one run (packed models)": 5,
}


@pytest.mark.slow
def test_every_section_has_a_table_with_a_number_per_contender(report):
    sections = tables(report)
    search = sections.pop("Search")  # scripts/search_benchmark.py's table, when it exists
    assert len(search) in (0, 4)  # its four variants (pruner or not, one or two workers)
    assert len(sections) == len(EXPECTED_ROWS)
    for start, count in EXPECTED_ROWS.items():
        (title,) = [t for t in sections if t.startswith(start)]
        rows = sections[title]
        assert len(rows) == count, title
        for row in rows:
            assert all(cell for cell in row[:2]), (title, row)
            assert NUMBER.search(" ".join(row[1:])), (title, row)


@pytest.mark.slow
def test_accuracy_lists_pricenet_and_every_scikit_learn_contender(report):
    names = [row[0] for row in tables(report)["Accuracy"]]
    for name in (
        "pricenet experiment=recommended",
        "pricenet default config",
        "pricenet MLP + loss=coral",
        "pricenet MLP + loss=bce",
        "LogisticRegression",
        "LinearSVC",
        "SVC rbf",
        "RandomForest",
        "HistGradientBoosting",
        "MLPClassifier",
    ):
        assert any(n.startswith(name) for n in names), name
    for row in tables(report)["Accuracy"]:
        assert re.fullmatch(r"\d+\.\d\d ± \d+\.\d\d", row[1]), row
        assert row[2] == "3", row  # one figure per fold of the 3-fold quick CV


@pytest.mark.slow
def test_outside_tables_compare_both_datasets_with_one_chosen_recipe(report):
    rows = tables(report)["Tables from outside the project"]
    for dataset in ("wine", "breast_cancer"):
        mine = [row for row in rows if row[0].startswith(dataset)]
        assert len(mine) == 6, dataset
        assert sum("(chosen by inner val)" in row[1] for row in mine) == 1, dataset
        assert any(row[1].startswith("HistGradientBoosting") for row in mine), dataset


@pytest.mark.slow
def test_packed_section_measures_cv_at_both_batches_and_seeds(report):
    rows = tables(report)["Cross-validation at the cost of one run (packed models)"]
    assert [row[0].split(",")[0] for row in rows] == [
        "3x1 CV",
        "3x1 CV",
        "3 seeds (`trainer.seeds=3`)",
        "3x1 CV",
        "3x1 CV",
    ]
    for row in rows:
        assert row[1] == "3", row
        assert re.fullmatch(r"\*\*\d+\.\d\dx\*\*", row[5]), row
