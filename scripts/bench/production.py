"""Production: ONNX parity, the HTTP service, the exported graph, and calibration."""

from __future__ import annotations

import re
import select
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from pricenet.export import INPUT, ExportOptions, export, onnx_session
from pricenet.inference.predictor import Predictor
from pricenet.run.pipeline import run

from .common import Context, compose_cfg
from .harness import timed
from .render import Table

TABLES = {
    "parity": Table(
        "ONNX parity",
        "onnxruntime's probabilities against `Predictor.predict_proba` on every row, one "
        "model per head ({epochs} epochs, `python -m pricenet.export ... format=onnx`).",
        (
            ("head (loss=)", "{head}"),
            ("max abs diff", "{max_diff:.2e}"),
            ("rows", "{rows}"),
        ),
    ),
    "service": Table(
        "The service",
        "`python -m pricenet.serve` (experiment=recommended) on localhost, called with httpx "
        "keep-alive: {requests} one-row JSON requests and {batch_rows}-row CSV bodies, beside "
        "`Predictor.predict` in this process. Exit code after SIGTERM: {exit_code}.",
        (
            ("", "{name}"),
            ("one row p50 ms", "{p50:.2f}"),
            ("p99 ms", "{p99:.2f}"),
            ("mean ms", "{mean:.2f}"),
            ("batch rows/s", "{rate:,.0f}"),
        ),
    ),
    "graph": Table(
        "The exported graph",
        "The same batches through onnxruntime and torch eager (`Predictor.probability_module()`),"
        " one thread. Start-up in a fresh process (imports, load, first one-row prediction, "
        "median of 3): onnxruntime {ort_start_ms:.0f} ms, torch + Predictor "
        "{torch_start_ms:.0f} ms.",
        (
            ("batch rows", "{size}"),
            ("onnxruntime rows/s", "{ort:,.0f}"),
            ("torch eager rows/s", "{eager:,.0f}"),
            ("max abs diff", "{max_diff:.1e}"),
        ),
    ),
    "calibration": Table(
        "Calibration",
        "Temperature scaling fitted on the validation split; ECE (15 bins) and NLL on the test "
        "split, as `metrics.json` reports them.",
        (
            ("model", "{name}"),
            ("T", "{temperature:.3f}"),
            ("ECE before", "{ece_before:.4f}"),
            ("after", "{ece_after:.4f}"),
            ("NLL before", "{nll_before:.4f}"),
            ("after", "{nll_after:.4f}"),
        ),
    ),
}

HEADS = ["cross_entropy", "bce", "coral", "mse", "l1", "smooth_l1"]


def _quantiles_ms(samples: list[float]) -> dict[str, float]:
    values = np.asarray(samples) * 1000
    return {
        "p50": float(np.percentile(values, 50)),
        "p99": float(np.percentile(values, 99)),
        "mean": float(values.mean()),
    }


def parity(csv: Path, work: Path, heads: list[str], epochs: int) -> list[dict[str, Any]]:
    """Max |onnxruntime - Predictor| per head on every row of ``csv``."""
    frame, rows = pd.read_csv(csv), []
    for loss in heads:
        run_dir = work / f"parity-{loss}"
        cfg = compose_cfg(
            "data=csv", f"data.path={csv}", f"loss={loss}", f"trainer.epochs={epochs}"
        )
        run(cfg, run_dir)
        export(ExportOptions(checkpoint=str(run_dir), output=str(run_dir / "model.onnx")))
        predictor = Predictor.from_checkpoint(run_dir)
        features = frame[predictor.feature_names].to_numpy(dtype=np.float32)
        got = onnx_session(run_dir / "model.onnx").run(None, {INPUT: features})[0]
        gap = np.abs(got - predictor.predict_proba(frame)).max()
        rows.append({"head": loss, "max_diff": float(gap), "rows": len(frame)})
    return rows


class Server:
    """``python -m pricenet.serve`` on a free port, its URL read from its first lines."""

    def __init__(self, checkpoint: Path) -> None:
        command = [sys.executable, "-m", "pricenet.serve", f"checkpoint={checkpoint}", "port=0"]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        deadline, self.url = time.monotonic() + 60, ""
        while time.monotonic() < deadline and not self.url:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                found = re.search(r"on (http://[\d.]+:\d+)", self.proc.stdout.readline())
                self.url = found.group(1) if found else ""
        if not self.url:
            self.proc.kill()
            raise RuntimeError("the server did not start")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


def service(run_dir: Path, csv: Path, requests: int) -> dict[str, Any]:
    """One-row latency and batch throughput over HTTP and in process."""
    import httpx

    predictor = Predictor.from_checkpoint(run_dir)
    frame = pd.read_csv(csv).drop(columns=[predictor.label_name])
    records = frame.to_dict(orient="records")
    batch = frame.iloc[:1000]
    body, warm = batch.to_csv(index=False), min(50, requests)
    server = Server(run_dir)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for i in range(warm):
                http.post("/predict", json=records[i])
            single = []
            for i in range(requests):
                started = time.perf_counter()
                answer = http.post("/predict", json=records[i % len(records)])
                single.append(time.perf_counter() - started)
                answer.raise_for_status()
            headers = {"content-type": "text/csv"}
            batches = [
                timed(lambda: http.post("/predict", content=body, headers=headers))
                for _ in range(max(5, warm))
            ]
    finally:
        code = server.stop()
    torch.set_num_threads(1)  # as the service runs
    in_single = [
        timed(lambda i=i: predictor.predict(frame.iloc[[i % len(frame)]])) for i in range(requests)
    ]
    in_batches = [timed(lambda: predictor.predict(batch)) for _ in range(max(5, warm))]
    rows = [
        {
            "name": "HTTP service",
            **_quantiles_ms(single),
            "rate": len(batch) / statistics.median(batches),
        },
        {
            "name": "Predictor.predict in process",
            **_quantiles_ms(in_single),
            "rate": len(batch) / statistics.median(in_batches),
        },
    ]
    facts = {"requests": requests, "batch_rows": len(batch), "exit_code": code}
    return {"facts": facts, "rows": rows}


_START_ORT = """
import sys, time, numpy as np
t = time.perf_counter()
import onnxruntime as ort
s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
s.run(None, {"features": np.zeros((1, 20), np.float32)})
print(time.perf_counter() - t)
"""
_START_TORCH = """
import sys, time
t = time.perf_counter()
import torch
from pricenet.inference.predictor import Predictor
m = Predictor.from_checkpoint(sys.argv[1]).probability_module()
with torch.no_grad():
    m(torch.zeros(1, 20))
print(time.perf_counter() - t)
"""


def _start_up(script: str, path: Path) -> float:
    samples = []
    for _ in range(3):
        done = subprocess.run(
            [sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True
        )
        samples.append(float(done.stdout.split()[-1]))
    return statistics.median(samples)


def graph(run_dir: Path, csv: Path) -> dict[str, Any]:
    """Rows/s of onnxruntime and torch eager per batch size, and their start-up."""
    model = run_dir / "model.onnx"
    export(ExportOptions(checkpoint=str(run_dir), output=str(model), overwrite=True))
    predictor = Predictor.from_checkpoint(run_dir)
    features = pd.read_csv(csv)[predictor.feature_names].to_numpy(dtype=np.float32)
    module, session = predictor.probability_module(), onnx_session(model)
    torch.set_num_threads(1)
    rows = []
    for size in (1, 100, 1000):
        x = features[:size]
        tensor, repeats = torch.from_numpy(x), max(50, 20_000 // size)
        with torch.no_grad():
            expected = module(tensor).numpy()
            eager = statistics.median(timed(lambda t=tensor: module(t)) for _ in range(repeats))
        ort = statistics.median(
            timed(lambda a=x: session.run(None, {INPUT: a})) for _ in range(repeats)
        )
        gap = np.abs(session.run(None, {INPUT: x})[0] - expected).max()
        rows.append(
            {"size": len(x), "ort": len(x) / ort, "eager": len(x) / eager, "max_diff": float(gap)}
        )
    facts = {
        "ort_start_ms": 1000 * _start_up(_START_ORT, model),
        "torch_start_ms": 1000 * _start_up(_START_TORCH, run_dir),
    }
    return {"facts": facts, "rows": rows}


def calibration(csv: Path, work: Path, shrink: list[str]) -> list[dict[str, Any]]:
    """Temperature, ECE and NLL before and after, categorical and CORAL heads."""
    recipes = {
        "MLP + cross_entropy (default config)": [],
        "linear + CORAL (experiment=recommended, val_size=0.15)": [
            "experiment=recommended",
            "data.val_size=0.15",
        ],
    }
    rows = []
    for k, (name, overrides) in enumerate(recipes.items()):
        cfg = compose_cfg("data=csv", f"data.path={csv}", *overrides, *shrink)
        metrics, _ = run(cfg, work / f"calibration-{k}")
        rows.append({"name": name, **(metrics["calibration"] or {})})
    return rows


def measure(ctx: Context) -> dict[str, Any]:
    """The four production tables."""
    csv, work = ctx.csv_file(), ctx.work / "production"
    work.mkdir()
    heads, epochs, requests = (
        (["cross_entropy", "coral"], 2, 60) if ctx.quick else (HEADS, 10, 2000)
    )
    run_dir = work / "recommended"
    run(compose_cfg("experiment=recommended", "data=csv", f"data.path={csv}"), run_dir)
    return {
        "parity": {"facts": {"epochs": epochs}, "rows": parity(csv, work, heads, epochs)},
        "service": service(run_dir, csv, requests),
        "graph": graph(run_dir, csv),
        "calibration": {"rows": calibration(csv, work, ctx.shrink(epochs))},
    }
