"""Production benchmarks: the HTTP service, the exported graph, ONNX parity and calibration.

    python scripts/production_benchmark.py [--csv PATH] [--out FILE] [--requests N]

Sections (markdown on stdout, and in --out when given):
  parity       onnxruntime vs Predictor.predict_proba, max |diff|, every head, shared data
  service      single-row latency p50/p99 and 1,000-row CSV throughput over localhost with
               httpx (keep-alive), beside Predictor called in-process
  graph        onnxruntime vs torch eager on the same batches: rows/s and start-up time
  calibration  ECE / NLL before and after temperature scaling (T fitted on the validation
               split, measured on the test split), categorical and CORAL heads

Run once on a quiet machine; it takes about two minutes.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

import pricenet.config  # noqa: F401  (registers the schemas)
from pricenet.calibration import calibration_report, fit_temperature, plot_reliability
from pricenet.data import LABEL, load_table, make_splits
from pricenet.export import INPUT, ExportOptions, export, onnx_session
from pricenet.pipeline import build_trainer, evaluate_best, run
from pricenet.predict import Predictor
from pricenet.seed import set_seed, set_threads

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CSV = REPO.parent / "shared" / "data" / "mobile_price.csv"
HEADS = ["cross_entropy", "bce", "coral", "mse", "l1", "smooth_l1"]


def compose_cfg(*overrides: str) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_module("pricenet.conf", version_base="1.3"):
        cfg = compose("config", overrides=["report.plots=false", "trainer.device=cpu", *overrides])
    GlobalHydra.instance().clear()
    return cfg


def quantiles_ms(samples: list[float]) -> tuple[float, float, float]:
    """p50, p99 and mean of ``samples`` (seconds) in milliseconds."""
    values = np.asarray(samples) * 1000
    return float(np.percentile(values, 50)), float(np.percentile(values, 99)), float(values.mean())


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


# --------------------------------------------------------------------------- sections


def parity(csv: Path, work: Path) -> list[str]:
    frame = pd.read_csv(csv)
    lines = [
        "| head (loss=) | max abs diff, onnxruntime vs Predictor.predict_proba | rows |",
        "|---|---|---|",
    ]
    for loss in HEADS:
        run_dir = work / f"parity-{loss}"
        run(
            compose_cfg("data=csv", f"data.path={csv}", f"loss={loss}", "trainer.epochs=10"),
            run_dir,
        )
        export(ExportOptions(checkpoint=str(run_dir), output=str(run_dir / "model.onnx")))
        expected = Predictor.from_checkpoint(run_dir).predict_proba(frame)
        features = frame[Predictor.from_checkpoint(run_dir).feature_names].to_numpy(
            dtype=np.float32
        )
        got = onnx_session(run_dir / "model.onnx").run(None, {INPUT: features})[0]
        lines.append(f"| {loss} | {np.abs(got - expected).max():.2e} | {len(frame)} |")
    return lines


class Server:
    def __init__(self, checkpoint: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pricenet.serve", f"checkpoint={checkpoint}", "port=0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        self.url = ""
        while time.monotonic() < deadline and not self.url:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                found = re.search(r"on (http://[\d.]+:\d+)", self.proc.stdout.readline())
                self.url = found.group(1) if found else ""
        if not self.url:
            self.proc.kill()
            raise SystemExit("the server did not start")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


def service(run_dir: Path, csv: Path, requests: int) -> list[str]:
    frame = pd.read_csv(csv).drop(columns=[LABEL])
    rows = frame.to_dict(orient="records")
    batch = frame.iloc[:1000]
    batch_csv = batch.to_csv(index=False)
    predictor = Predictor.from_checkpoint(run_dir)
    server = Server(run_dir)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for i in range(50):  # warm-up
                http.post("/predict", json=rows[i])
            single = []
            for i in range(requests):
                row = rows[i % len(rows)]
                start = time.perf_counter()
                answer = http.post("/predict", json=row)
                single.append(time.perf_counter() - start)
                assert answer.status_code == 200
            headers = {"content-type": "text/csv"}
            batches = timed(lambda: http.post("/predict", content=batch_csv, headers=headers), 40)
    finally:
        code = server.stop()
    torch.set_num_threads(1)  # as the service runs
    one = [frame.iloc[[i % len(frame)]] for i in range(requests)]
    in_single = []
    for part in one:
        start = time.perf_counter()
        predictor.predict(part)
        in_single.append(time.perf_counter() - start)
    in_batches = timed(lambda: predictor.predict(batch), 40)
    p50, p99, mean = quantiles_ms(single)
    i50, i99, imean = quantiles_ms(in_single)
    rate = 1000 / statistics.median(batches)
    in_rate = 1000 / statistics.median(in_batches)
    return [
        "| | one row: p50 | p99 | mean | 1,000-row batches: rows/s (median) |",
        "|---|---|---|---|---|",
        f"| HTTP service (JSON row / CSV body, httpx keep-alive, {requests} requests) "
        f"| {p50:.2f} ms | {p99:.2f} ms | {mean:.2f} ms | {rate:,.0f} |",
        f"| Predictor.predict in-process | {i50:.2f} ms | {i99:.2f} ms | {imean:.2f} ms "
        f"| {in_rate:,.0f} |",
        "",
        f"Targets: p99 <= 10 ms for one row, >= 50,000 rows/s in batches. Server exit code "
        f"after SIGTERM: {code}.",
    ]


STARTUP_ORT = """
import time, numpy as np
t = time.perf_counter()
import onnxruntime as ort
s = ort.InferenceSession({path!r}, providers=["CPUExecutionProvider"])
s.run(None, {{"features": np.zeros((1, 20), np.float32)}})
print(time.perf_counter() - t)
"""
STARTUP_TORCH = """
import time
t = time.perf_counter()
import torch
from pricenet.predict import Predictor
m = Predictor.from_checkpoint({path!r}).probability_module()
with torch.no_grad():
    m(torch.zeros(1, 20))
print(time.perf_counter() - t)
"""


def graph(run_dir: Path, csv: Path) -> list[str]:
    model = run_dir / "model.onnx"
    export(ExportOptions(checkpoint=str(run_dir), output=str(model), overwrite=True))
    predictor = Predictor.from_checkpoint(run_dir)
    features = pd.read_csv(csv)[predictor.feature_names].to_numpy(dtype=np.float32)
    module = predictor.probability_module()
    session = onnx_session(model)
    torch.set_num_threads(1)
    lines = [
        "| batch rows | onnxruntime rows/s | torch eager rows/s | max abs diff |",
        "|---|---|---|---|",
    ]
    for size in (1, 100, 1000):
        x = features[:size]
        tensor = torch.from_numpy(x)
        with torch.no_grad():
            expected = module(tensor).numpy()
            repeats = max(50, 20_000 // size)
            t_torch = statistics.median(timed(lambda t=tensor: module(t), repeats))
        t_ort = statistics.median(timed(lambda a=x: session.run(None, {INPUT: a}), repeats))
        gap = np.abs(session.run(None, {INPUT: x})[0] - expected).max()
        lines.append(f"| {size} | {size / t_ort:,.0f} | {size / t_torch:,.0f} | {gap:.1e} |")
    starts = {}
    for name, script in (("onnxruntime", STARTUP_ORT), ("torch + Predictor", STARTUP_TORCH)):
        path = model if name == "onnxruntime" else run_dir
        samples = []
        for _ in range(3):
            out = subprocess.run(
                [sys.executable, "-c", script.format(path=str(path))],
                capture_output=True,
                text=True,
                check=True,
            )
            samples.append(float(out.stdout.strip().splitlines()[-1]))
        starts[name] = statistics.median(samples)
    lines += [
        "",
        "Start-up (fresh process: imports, load, first 1-row prediction; median of 3): "
        + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in starts.items())
        + ". One thread each (torch.set_num_threads(1); onnxruntime's default pool).",
    ]
    return lines


def calibration(csv: Path, work: Path) -> list[str]:
    lines = [
        "| model | T (fitted on val) | test ECE before | after | test NLL before | after |",
        "|---|---|---|---|---|---|",
    ]
    recipes = {
        "mlp + cross_entropy (default config)": [],
        "linear + CORAL (experiment=recommended, val_size=0.15)": [
            "experiment=recommended",
            "data.val_size=0.15",
        ],
    }
    for name, overrides in recipes.items():
        cfg = compose_cfg("data=csv", f"data.path={csv}", *overrides)
        set_threads(1)
        set_seed(cfg.trainer.seed)
        table = load_table(dict(cfg.data.source))
        splits = make_splits(
            table, cfg.data.val_size, cfg.data.test_size, cfg.data.standardize, cfg.trainer.seed
        )
        trainer = build_trainer(cfg, splits)
        trainer.fit()
        evaluate_best(trainer, cfg.monitor)
        with torch.no_grad():
            trainer.model.eval()
            val, test = trainer.model(splits.x_val), trainer.model(splits.x_test)
        head = trainer.head
        t = fit_temperature(val, splits.y_val, head)
        report = calibration_report(test, splits.y_test, head, t)
        slug = "coral" if "CORAL" in name else "categorical"
        plot_reliability(
            head.probabilities(test),
            head.probabilities(test / t),
            splits.y_test,
            work / f"reliability-{slug}.png",
        )
        lines.append(
            f"| {name} | {t:.3f} | {report['ece_before']:.4f} | {report['ece_after']:.4f} "
            f"| {report['nll_before']:.4f} | {report['nll_after']:.4f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--csv", type=Path, default=Path(os.environ.get("PRICENET_SHARED_CSV", DEFAULT_CSV))
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--keep", type=Path, default=None, help="keep the runs and PNGs here")
    args = parser.parse_args()
    if not args.csv.is_file():
        raise SystemExit(f"error: {args.csv}: not found (pass --csv)")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        run_dir = work / "recommended"
        run(compose_cfg("experiment=recommended", "data=csv", f"data.path={args.csv}"), run_dir)
        sections = {
            "ONNX parity (every head, 10 epochs on the shared data)": parity(args.csv, work),
            "The service (experiment=recommended)": service(run_dir, args.csv, args.requests),
            "The exported graph (experiment=recommended)": graph(run_dir, args.csv),
            "Calibration (shared data)": calibration(args.csv, work),
        }
    report = [
        "# Production benchmarks",
        "",
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, Python {platform.python_version()}, data {args.csv.name}",
    ]
    for title, lines in sections.items():
        report += ["", f"## {title}", "", *lines]
    text = "\n".join(report) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
