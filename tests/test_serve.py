"""The HTTP service, live: a real uvicorn subprocess on a free loopback port, a real client."""

from __future__ import annotations

import gc
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
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

from pricenet.errors import DataError
from pricenet.inference.predictor import Predictor
from pricenet.run.pipeline import run
from pricenet.serve import Limits, RequestError, Service, csv_frame, json_rows, main

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


@pytest.mark.parametrize(
    ("message", "detail"),
    [("\n  bad quoting\n  at line 7", "CSV body: bad quoting"), ("", "CSV body: ValueError")],
)
def test_an_unparsable_csv_body_is_one_line_naming_the_first(monkeypatch, message, detail):
    def refuse(*args, **kwargs):
        raise ValueError(message)

    monkeypatch.setattr(pd, "read_csv", refuse)
    with pytest.raises(RequestError) as refused:
        csv_frame(b"ram\n1\n")
    assert (refused.value.status, refused.value.detail) == (422, detail)


def test_json_rows_never_unpickle():
    # bytes that would run code if unpickled are just an invalid JSON body
    with pytest.raises(Exception, match="not valid JSON"):
        json_rows(b"\x80\x04\x95cos\nsystem\n.")


# --------------------------------------------------------------------------- hardening (issue 16)


def raw_request(url: str, data: bytes, wait: float = 5.0) -> tuple[bytes, bool]:
    """Send ``data`` on a fresh loopback connection; what came back and whether the server
    closed the connection within ``wait`` seconds."""
    port = int(url.rsplit(":", 1)[1])
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(data)
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except TimeoutError:
            return answer, False
    return answer, True


def wide_csv(columns: int) -> bytes:
    """A header of ``columns`` names and one row of ones: 7.9 MB for 800k columns."""
    names = ",".join(f"c{i}" for i in range(columns))
    return f"{names}\n{','.join(['1'] * columns)}\n".encode()


def poll_health_while(url: str, work) -> tuple[list[float], object]:
    """Seconds each ``/health`` took, polled from another thread while ``work()`` ran, and
    what ``work()`` returned."""
    latencies: list[float] = []
    ready, done = threading.Event(), threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            for _ in range(5):  # warm up: connection, first-request imports
                http.get("/health")
            ready.set()
            while not done.is_set() and len(latencies) < 5000:
                start = time.perf_counter()
                assert http.get("/health").status_code == 200
                latencies.append(time.perf_counter() - start)
                time.sleep(0.01)

    gc.collect()
    gc.disable()  # a full collection of this test process's big heap would stall its own polls
    poller = threading.Thread(target=poll)
    poller.start()
    try:
        assert ready.wait(60)
        result = work()
    finally:
        done.set()
        poller.join(60)
        gc.enable()
    return latencies, result


def wide_json(keys: int) -> bytes:
    """One row object of ``keys`` keys: 8.0 MB for 580k (json.loads holds the GIL 0.6 s)."""
    return json.dumps({f"c{i}": 1 for i in range(keys)}).encode()


@pytest.mark.parametrize(
    ("kind", "body", "columns"),
    [("text/csv", wide_csv, 800_000), ("application/json", wide_json, 580_000)],
    ids=["csv", "json"],
)
def test_health_answers_while_a_wide_body_is_handled(trained, tmp_path, kind, body, columns):
    body = body(columns)
    assert 7.8e6 < len(body) < 8 * 1024 * 1024  # within the default max_body_bytes
    server = Server(trained[0], tmp_path / "server.log")
    try:

        def send() -> httpx.Response:
            with httpx.Client(base_url=server.url, timeout=120) as http:
                return http.post("/predict", content=body, headers={"content-type": kind})

        latencies, answer = poll_health_while(server.url, send)
    finally:
        code, _, err = server.stop()
    assert answer.status_code == 400
    assert answer.json()["detail"] == f"{columns} columns, over max_columns=1024"
    assert len(latencies) >= 3, latencies
    # A loop held by the body's parse (json.loads 0.6 s, pandas seconds) would hold a poll
    # that long; a loaded 2-core CI machine can delay one poll by a tenth of a second.
    assert max(latencies) < 0.5, latencies
    assert sorted(latencies)[len(latencies) // 2] < 0.1, latencies
    assert code == 0 and "Traceback" not in err, err


def test_a_wide_body_under_raised_limits_is_parsed_off_the_event_loop(trained, tmp_path):
    # the payload's cost: pandas builds a column per name (the old service spent 24 s on the
    # loop for 800k); 100k columns take seconds of parsing, and /health stays quick meanwhile
    body = wide_csv(100_000)
    server = Server(trained[0], tmp_path / "server.log", "max_columns=200000", "max_cells=1000000")
    try:

        def send() -> tuple[httpx.Response, float]:
            start = time.perf_counter()
            with httpx.Client(base_url=server.url, timeout=300) as http:
                answer = http.post("/predict", content=body, headers={"content-type": "text/csv"})
            return answer, time.perf_counter() - start

        latencies, (answer, took) = poll_health_while(server.url, send)
    finally:
        server.stop()
    assert answer.status_code == 422  # parsed, then refused: the features are missing
    assert "columns 'battery_power', 'blue'" in answer.json()["detail"]
    assert took > 0.5 and len(latencies) >= 10, (took, latencies)
    assert max(latencies) < min(0.5, took / 2), latencies  # never held for the parse
    assert sorted(latencies)[len(latencies) // 2] < 0.1, latencies


def test_content_length_with_transfer_encoding_is_refused_and_closed(server, trained):
    row = json.dumps(rows_json(trained[1].iloc[[0]])[0]).encode()
    chunked = f"{len(row):x}\r\n".encode() + row + b"\r\n0\r\n\r\n"
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    # the payload has an effect: a chunked body alone is read and answered, connection kept
    answer, closed = raw_request(
        server.url, head + b"Transfer-Encoding: chunked\r\n\r\n" + chunked, 2
    )
    assert answer.startswith(b"HTTP/1.1 200") and b'"predictions"' in answer and not closed
    smuggled = head + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked
    answer, closed = raw_request(server.url, smuggled, 10)
    assert answer.startswith(b"HTTP/1.1 400")
    assert b"both Content-Length and Transfer-Encoding" in answer
    assert closed


def test_a_dropped_client_is_one_log_line(trained, tmp_path):
    server = Server(trained[0], tmp_path / "server.log")
    try:
        port = int(server.url.rsplit(":", 1)[1])
        for _ in range(2):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(
                    b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
                    b"Content-Length: 1000\r\n\r\nram,px_width\r\n"
                )
                time.sleep(0.2)
        deadline = time.monotonic() + 20
        while server.log.read_text().count("disconnected") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        code, _, err = server.stop()
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 2, err
    assert all(
        re.fullmatch(
            r"WARNING: +127\.0\.0\.1:\d+ disconnected before its body was complete \(14 bytes\)",
            line,
        )
        for line in lines
    ), err
    assert code == 0


def test_schema_and_docs_name_the_checkpoint_file_only(client, trained):
    folder = str(trained[0].resolve())
    assert client.get("/schema").json()["checkpoint"] == "best.pt"
    for page in ("/schema", "/openapi.json", "/docs"):
        text = client.get(page).text
        assert folder not in text and str(trained[0]) not in text, page
    assert "model best.pt" in client.get("/openapi.json").json()["info"]["description"]


def test_ids_come_back_as_sent(client, trained):
    rows = rows_json(trained[1].iloc[:4].drop(columns=["id"]))
    rows[0]["id"], rows[1]["id"], rows[3]["id"] = " a ", 7, 1.5  # rows[2]: none, its number
    answer = client.post("/predict", json=rows)
    assert answer.status_code == 200, answer.text
    assert [p["id"] for p in answer.json()["predictions"]] == [" a ", 7, 3, 1.5]

    part = trained[1].iloc[:3].copy()
    part["id"] = ["007", " x ", "1e3"]
    answer = client.post(
        "/predict", content=part.to_csv(index=False), headers={"content-type": "text/csv"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.text.splitlines()[0].startswith("id,")
    assert [line.split(",")[0] for line in answer.text.splitlines()[1:]] == ["007", " x ", "1e3"]


def test_json_nan_is_refused_and_answers_are_strict_json(client, trained):
    row = json.dumps(rows_json(trained[1].iloc[[0]])[0] | {"ram": float("nan")})
    assert "NaN" in row  # Python's json writes (and reads) the non-standard literal
    answer = client.post("/predict", content=row, headers={"content-type": "application/json"})
    assert answer.status_code == 400
    assert answer.json()["detail"] == "body is not valid JSON (NaN is not a JSON value)"


@pytest.fixture(scope="module")
def service(trained) -> Service:
    return Service(Predictor.from_checkpoint(trained[0]), "x/best.pt", 10**8, Limits(30, 100))


def test_non_finite_probabilities_are_refused_never_written_as_nan(trained):
    import torch

    predictor = Predictor.from_checkpoint(trained[0])
    # as a crafted checkpoint or an overflowing input would make them; the Predictor refuses
    # non-finite outputs itself, and the service must answer that as a refused row
    predictor.temperatures = torch.full_like(predictor.temperatures, float("nan"))
    rows = trained[1].iloc[:2]
    with pytest.raises(DataError, match="outputs are not finite"):
        predictor.predict(rows)
    crafted = Service(predictor, "best.pt", 10**8, Limits(30, 100))
    for answer in (crafted.predict_json, crafted.predict_csv):
        body = (
            rows.to_csv(index=False)
            if answer == crafted.predict_csv
            else rows.to_json(orient="records")
        )
        with pytest.raises(RequestError) as refused:
            answer(body.encode())
        assert refused.value.status == 422
        assert "not finite" in refused.value.detail, refused.value.detail
        assert "nan" not in refused.value.detail.lower()


def test_columns_and_cells_over_the_limits_get_400_before_a_frame_is_built(service, trained):
    rows = rows_json(trained[1].iloc[:5])  # 21 columns: 105 values
    with pytest.raises(
        RequestError, match=r"^105 values \(keys in the row objects\), over max_cells=100$"
    ):
        service.predict_json(json.dumps(rows).encode())
    wide = [rows[0] | {f"extra{i}": 1 for i in range(10)}]
    with pytest.raises(RequestError, match=r"^31 columns, over max_columns=30$"):
        service.predict_json(json.dumps(wide).encode())
    text = trained[1].iloc[:5].to_csv(index=False).encode()
    with pytest.raises(
        RequestError, match=r"^105 values \(21 columns x 5 lines\), over max_cells=100$"
    ):
        service.predict_csv(text)
    # a quoted header is counted by the csv module: a newline inside quotes is one name
    quoted = b'"a\nb",' + b",".join(b"c%d" % i for i in range(30)) + b"\n" + b"1," * 30 + b"1\n"
    with pytest.raises(RequestError, match=r"^31 columns, over max_columns=30$"):
        service.predict_csv(quoted)
    assert service.predict_csv(trained[1].iloc[:4].to_csv(index=False).encode()).count(b"\n") == 5


def test_deeply_nested_json_gets_400(service):
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(RecursionError):  # the payload: what made the old service answer 500
        json.loads(deep)
    with pytest.raises(RequestError, match=r"nested too deeply") as refused:
        service.predict_json(deep)
    assert refused.value.status == 400


@pytest.fixture(scope="module")
def colours(tmp_path_factory) -> Path:
    """A run on a table with a categorical column and missing cells, under missing=impute."""
    folder = tmp_path_factory.mktemp("colours")
    rng = np.random.default_rng(0)
    label = rng.integers(0, 3, 240)
    table = pd.DataFrame(
        {
            "size": label + rng.normal(0, 0.6, 240),
            "colour": np.array(["red", "green", "blue"])[label],
        }
    )
    table.loc[[3, 9], "colour"] = ""
    table["target"] = label
    table.to_csv(folder / "colours.csv", index=False)
    GlobalHydra.instance().clear()
    with initialize_config_module("pricenet.conf", version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "data=csv",
                f"data.path={folder / 'colours.csv'}",
                "data.label=target",
                "data.missing=impute",
                "trainer.epochs=3",
                "trainer.device=cpu",
                "report.plots=false",
            ],
        )
    GlobalHydra.instance().clear()
    run(cfg, folder / "run")
    return folder / "run"


def test_an_id_column_outside_the_schema_comes_back(colours):
    predictor = Predictor.from_checkpoint(colours)
    assert predictor.schema.id is None
    service = Service(predictor, "best.pt", 10**6, Limits(10, 100))
    rows = [{"id": "p-1", "size": 1.0, "colour": "red"}, {"id": 42, "size": 2.0, "colour": "blue"}]
    answer = json.loads(service.predict_json(json.dumps(rows).encode()))
    assert [p["id"] for p in answer["predictions"]] == ["p-1", 42]
    text = service.predict_csv(b"size,colour,id\n1.0,red,p-1\n2.0,blue,0042\n").decode()
    assert [line.split(",")[0] for line in text.splitlines()] == ["id", "p-1", "0042"]


def test_a_categorical_null_in_every_row_is_imputed(colours):
    """An all-None object column reached the validator as a read-only array (pandas
    copy-on-write), and writing into it was a 500."""
    service = Service(Predictor.from_checkpoint(colours), "best.pt", 10**6, Limits(10, 100))
    rows = [{"size": 1.0, "colour": None}, {"size": 2.0, "colour": None}]
    answer = json.loads(service.predict_json(json.dumps(rows).encode()))
    assert [p["target"] in (0, 1, 2) for p in answer["predictions"]] == [True, True]


def test_options_are_checked_before_start(trained, capsys):
    import uvicorn

    with pytest.raises(KeyError):  # the payload: uvicorn fails only once it starts
        uvicorn.Config(None, log_level="nonsense")
    err = _exit_2(capsys, [f"checkpoint={trained[0]}", "port=0", "log_level=nonsense"])
    assert "log_level='nonsense': one of critical, error, warning, info, debug, trace" in err
    err = _exit_2(capsys, [f"checkpoint={trained[0]}", "port=0", "max_columns=5"])
    assert "max_columns=5: below the checkpoint's 20 features and an id" in err
    err = _exit_2(capsys, [f"checkpoint={trained[0]}", "port=0", "workers=0"])
    assert "workers=0: must be >= 1" in err


def _children(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task")
    return [int(c) for task in tasks.iterdir() for c in (task / "children").read_text().split()]


def _workers(server: Server) -> list[int]:
    """The live worker processes of ``server``: its children are the forkserver (whose
    children are the workers) and a resource tracker."""
    found = [w for child in _children(server.proc.pid) for w in _children(child)]
    return [w for w in found if "\nState:\tZ" not in Path(f"/proc/{w}/status").read_text()]


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux's /proc")
def test_a_dead_worker_costs_only_the_request_it_held(trained, tmp_path):
    server = Server(trained[0], tmp_path / "server.log", "workers=1")
    row = rows_json(trained[1].iloc[[0]])[0]
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            assert http.post("/predict", json=row).status_code == 200
            (first,) = _workers(server)
            # a worker killed while it holds a request: stopped first, so the request waits
            os.kill(first, signal.SIGSTOP)
            with ThreadPoolExecutor(1) as pool:
                held = pool.submit(http.post, "/predict", json=row)
                time.sleep(1.0)
                assert not held.done()
                os.kill(first, signal.SIGKILL)
                in_flight = held.result(timeout=60)
            after = [http.post("/predict", json=row) for _ in range(2)]
            (second,) = _workers(server)
            assert second != first
            # a worker that dies between requests costs no request at all
            os.kill(second, signal.SIGKILL)
            time.sleep(1.0)
            later = http.post("/predict", json=row)
            assert http.get("/health").status_code == 200
    finally:
        code, _, err = server.stop()
    assert in_flight.status_code == 503, in_flight.text
    assert in_flight.headers["retry-after"] == "1"
    assert in_flight.json()["detail"] == (
        "the worker process answering this request died (killed, or out of memory?); "
        "the workers were restarted"
    )
    assert [a.status_code for a in [*after, later]] == [200, 200, 200]
    assert later.json() == after[0].json()
    assert err.count("a worker process died") == 2 and "Traceback" not in err, err
    assert code == 0


def test_sigterm_right_after_the_ready_line_still_stops(trained, tmp_path):
    # the old service swallowed a SIGTERM sent before uvicorn installed its handlers
    server = Server(trained[0], tmp_path / "server.log")
    code, out, err = server.stop(timeout=30)
    assert code == 0 and out.strip().endswith("stopped"), (code, out, err)


def test_a_request_of_many_rows_is_predicted_in_chunks(trained, expected):
    from pricenet.nn.spec import PREDICT_ROWS

    predictor = Predictor.from_checkpoint(trained[0])
    passes: list[int] = []
    predictor.network.register_forward_pre_hook(lambda _m, args: passes.append(args[0].shape[1]))
    service = Service(predictor, "best.pt", 10**8, Limits(30, 10**6))
    frame = pd.concat([trained[1]] * 6, ignore_index=True)  # 1800 rows
    answer = json.loads(service.predict_json(frame.to_json(orient="records").encode()))
    assert passes == [PREDICT_ROWS, len(frame) - PREDICT_ROWS]
    got = [p[LABEL] for p in answer["predictions"]]
    assert got == expected.loc[frame["id"], LABEL].tolist()
