"""The HTTP service, live: a real uvicorn subprocess on a free loopback port, a real client."""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import FEATURES, LABEL
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from pricenet.pipeline import run
from pricenet.predict import Predictor
from pricenet.serve import json_rows, main

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

pytestmark = pytest.mark.slow

LIMIT = 20_000  # max_body_bytes of the test server
PROBS = [f"prob_{k}" for k in range(4)]


class Server:
    """``python -m pricenet.serve`` on port 0 (any free port), stopped with SIGTERM."""

    def __init__(self, checkpoint: Path, log: Path, *options: str) -> None:
        self.log = log
        args = [f"checkpoint={checkpoint}", "host=127.0.0.1", "port=0", *options]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.stderr = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pricenet.serve", *args],
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            env=env,
        )
        self.url = self._wait_for_url(timeout=60)

    def _wait_for_url(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                line = self.proc.stdout.readline()
                found = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
                if found:
                    return found.group(1)
            if self.proc.poll() is not None:
                break
        self.stop()
        raise AssertionError(f"server did not start: {self.log.read_text()}")

    def stop(self, timeout: float = 30) -> tuple[int, str, str]:
        """SIGTERM, wait; the exit code, the rest of stdout and all of stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        self.stderr.close()
        return self.proc.returncode, out, self.log.read_text()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """A small CORAL run (labels count thresholds, not argmax) and its synthetic rows."""
    folder = tmp_path_factory.mktemp("serve")
    GlobalHydra.instance().clear()
    with initialize_config_module("pricenet.conf", version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "trainer.epochs=3",
                "data.n_rows=300",
                "trainer.device=cpu",
                "report.plots=false",
                "loss=coral",
            ],
        )
    GlobalHydra.instance().clear()
    run(cfg, folder / "run")
    frame = instantiate(cfg.data.source).to_frame().drop(columns=[LABEL])
    frame.insert(0, "id", [f"phone-{i}" for i in range(len(frame))])
    return folder / "run", frame


@pytest.fixture(scope="module")
def expected(trained) -> pd.DataFrame:
    run_dir, frame = trained
    return Predictor.from_checkpoint(run_dir).predict(frame).set_index("id")


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory):
    started = Server(
        trained[0], tmp_path_factory.mktemp("log") / "server.log", f"max_body_bytes={LIMIT}"
    )
    yield started
    code, _, err = started.stop()
    assert code == 0 and "Traceback" not in err, err


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


def rows_json(frame: pd.DataFrame) -> list[dict]:
    return frame.to_dict(orient="records")


def check_json(answer: httpx.Response, expected: pd.DataFrame, ids: list[str]) -> None:
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert [p["id"] for p in predictions] == ids
    want = expected.loc[ids]
    assert [p[LABEL] for p in predictions] == want[LABEL].tolist()
    got = np.array([[p["probabilities"][str(k)] for k in range(4)] for p in predictions])
    assert np.abs(got - want[PROBS].to_numpy()).max() <= 1e-6  # float32 rounding


def test_health_and_schema(client):
    assert client.get("/health").json() == {"status": "ok"}
    schema = client.get("/schema").json()
    assert schema["features"] == list(FEATURES)
    assert schema["classes"] == [0, 1, 2, 3]
    assert schema["label"] == LABEL
    assert schema["max_body_bytes"] == LIMIT


def test_openapi_page_documents_predict(client):
    assert "swagger" in client.get("/docs").text.lower()
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "text/csv"}


def test_json_predictions_equal_the_predictor(client, trained, expected):
    frame = trained[1]
    many = frame.iloc[:50]
    ids = many["id"].tolist()
    check_json(client.post("/predict", json=rows_json(many)), expected, ids)
    check_json(client.post("/predict", json={"rows": rows_json(many)}), expected, ids)
    one = frame.iloc[[7]]
    check_json(client.post("/predict", json=rows_json(one)[0]), expected, ["phone-7"])
    # the coral head's label counts thresholds: it is not always the most probable class
    assert (expected[LABEL].to_numpy() != expected[PROBS].to_numpy().argmax(axis=1)).any()


def test_rows_without_id_are_numbered_from_1(client, trained):
    rows = rows_json(trained[1].iloc[:3].drop(columns=["id"]))
    answer = client.post("/predict", json=rows)
    assert [p["id"] for p in answer.json()["predictions"]] == [1, 2, 3]


def test_csv_predictions_equal_the_predictor(client, trained, expected):
    part = trained[1].iloc[:100]
    answer = client.post(
        "/predict", content=part.to_csv(index=False), headers={"content-type": "text/csv"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/csv")
    got = pd.read_csv(pd.io.common.StringIO(answer.text)).set_index("id")
    assert list(got.columns) == [LABEL, *PROBS]
    want = expected.loc[part["id"]]
    assert got[LABEL].tolist() == want[LABEL].tolist()
    assert np.abs(got[PROBS].to_numpy() - want[PROBS].to_numpy()).max() <= 1.5e-6  # %.6f


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("bad-ram", "column 'ram', row 3: 'many' is not a number"),
        ("missing", "column 'px_width': missing"),
        ("nested", "column 'ram', row 2: a list is not a value"),
        ("scalar", "row 1: expected an object, got int"),
        ("empty", "no rows to predict"),
    ],
)
def test_invalid_rows_get_422_and_the_service_stays_up(client, trained, body, message):
    rows = rows_json(trained[1].iloc[:4])
    if body == "bad-ram":
        rows[2]["ram"] = "many"
    elif body == "missing":
        rows = [{k: v for k, v in row.items() if k != "px_width"} for row in rows]
    elif body == "nested":
        rows[1]["ram"] = [1, 2]
    elif body == "scalar":
        rows = [3]
    else:
        rows = []
    answer = client.post("/predict", json=rows)
    assert answer.status_code == 422
    assert message in answer.json()["detail"]
    assert client.get("/health").status_code == 200


def test_invalid_csv_cell_gets_the_row_number(client, trained):
    part = trained[1].iloc[:5].astype(object)
    part.loc[part.index[3], "battery_power"] = ""
    answer = client.post(
        "/predict", content=part.to_csv(index=False), headers={"content-type": "text/csv"}
    )
    assert answer.status_code == 422
    assert "column 'battery_power', row 4" in answer.json()["detail"]


def test_other_media_types_get_415_and_bad_json_400(client):
    for headers in ({"content-type": "text/plain"}, {"content-type": "application/x-pickle"}, {}):
        answer = client.post("/predict", content=b"\x80\x04K\x01.", headers=headers)
        assert answer.status_code == 415, headers
        assert "send application/json or text/csv" in answer.json()["detail"]
    answer = client.post(
        "/predict", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert answer.status_code == 400
    assert "not valid JSON" in answer.json()["detail"]


def test_bodies_over_the_limit_get_413(client, trained):
    big = pd.concat([trained[1]] * 2).to_csv(index=False).encode()
    assert len(big) > LIMIT
    answer = client.post("/predict", content=big, headers={"content-type": "text/csv"})
    assert answer.status_code == 413
    assert f"over the limit of {LIMIT} bytes" in answer.json()["detail"]

    def chunks():  # no Content-Length: the limit holds while streaming
        for start in range(0, len(big), 4096):
            yield big[start : start + 4096]

    answer = client.post("/predict", content=chunks(), headers={"content-type": "text/csv"})
    assert answer.status_code == 413
    assert client.get("/health").status_code == 200


def test_concurrent_clients_all_get_correct_answers(server, trained, expected):
    frame = trained[1]
    clients, requests = 8, 200

    def worker(seed: int) -> int:
        rng = np.random.default_rng(seed)
        ok = 0
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for i in range(requests):
                part = frame.iloc[rng.choice(len(frame), size=int(rng.integers(1, 6)))]
                ids = part["id"].tolist()
                if i % 2:
                    check_json(http.post("/predict", json=rows_json(part)), expected, ids)
                else:
                    answer = http.post(
                        "/predict",
                        content=part.to_csv(index=False),
                        headers={"content-type": "text/csv"},
                    )
                    assert answer.status_code == 200, answer.text
                    got = pd.read_csv(pd.io.common.StringIO(answer.text))
                    assert got["id"].tolist() == ids
                    assert got[LABEL].tolist() == expected.loc[ids, LABEL].tolist()
                ok += 1
        return ok

    with ThreadPoolExecutor(clients) as pool:
        done = list(pool.map(worker, range(clients)))
    assert done == [requests] * clients


def test_sigterm_stops_cleanly(trained, tmp_path):
    server = Server(trained[0], tmp_path / "server.log")
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200
    code, out, err = server.stop()
    assert code == 0
    assert out.strip().endswith("stopped")
    assert "Traceback" not in err and "Error" not in err, err


def _exit_2(capsys, args: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


def test_a_port_in_use_is_one_line_and_exit_2(trained, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        err = _exit_2(capsys, [f"checkpoint={trained[0]}", f"port={port}"])
    assert f"port={port}: 127.0.0.1:{port} is already in use" in err


def test_a_remote_host_needs_allow_remote(capsys):
    err = _exit_2(capsys, ["checkpoint=/nonexistent", "host=0.0.0.0"])
    assert "host=0.0.0.0: not a loopback address" in err and "allow_remote=true" in err


def test_a_missing_checkpoint_is_one_line(capsys, tmp_path):
    err = _exit_2(capsys, [f"checkpoint={tmp_path / 'none.pt'}", "port=0"])
    assert "checkpoint not found" in err


def test_json_rows_never_unpickle():
    # bytes that would run code if unpickled are just an invalid JSON body
    with pytest.raises(Exception, match="not valid JSON"):
        json_rows(b"\x80\x04\x95cos\nsystem\n.")
