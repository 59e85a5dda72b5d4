"""An HTTP prediction service for a trained checkpoint (FastAPI on uvicorn).

Command::

    python -m pricenet.serve checkpoint=<run folder|best.pt> [host=127.0.0.1] [port=8000]

Endpoints:

* ``POST /predict`` with ``Content-Type: application/json``: one row object, a list of row
  objects, or ``{"rows": [...]}``; each row maps feature names to numbers (an ``id`` is
  kept). Answer: ``{"predictions": [{"id": ..., "<label>": ..., "probabilities":
  {"<class>": p, ...}}, ...]}`` in the checkpoint's original class values.
* ``POST /predict`` with ``Content-Type: text/csv``: a CSV with a header, as
  ``pricenet.predict`` reads; the answer is the CSV that command writes.
* ``GET /health``, ``GET /schema`` (features, label, classes), ``GET /docs`` (OpenAPI).

Rows are numbered from 1 in the order sent; a sent ``id`` (or the schema's id column) comes
back unchanged. An invalid row gets HTTP 422 with the message the command line gives. A body
that is neither JSON nor CSV gets 415, one over ``max_body_bytes`` gets 413, one with more
than ``max_columns`` columns or ``max_cells`` values (counted before the body becomes a table)
or malformed or too deeply nested JSON gets 400. Request data is parsed as JSON or CSV text
only, never unpickled. The model is loaded once, at start.

Parsing, prediction and the answer's encoding run in ``workers`` worker processes, each with
the model loaded, so the event loop keeps answering ``/health`` while a large body is handled
(a worker thread would not do: ``json.loads`` and pandas hold the GIL for a second on a wide
body). A worker that dies (killed, out of memory) costs the requests it held a 503, and the
workers are restarted for the next ones. The model runs over at most ``PREDICT_ROWS`` rows a
pass (:class:`~pricenet.inference.predictor.Predictor`), and a body's rows are bounded by
``max_body_bytes`` and ``max_cells``. Answers are strict JSON: a non-finite probability is
refused, never written as ``NaN``.

The service binds to a loopback address unless ``allow_remote=true``: it has no
authentication, so exposing it is a decision to make explicitly (behind a proxy that has).
"""

from __future__ import annotations

import asyncio
import csv
import errno
import gc
import io
import ipaddress
import json
import logging
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import socket
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from omegaconf import MISSING

from pricenet.atomic import json_value
from pricenet.checkpoints.checkpoint import resolve_checkpoint
from pricenet.config.cli import parse_options
from pricenet.errors import (
    CheckpointError,
    ConfigError,
    PricenetError,
    exit_on_user_error,
    first_line,
    shown,
)
from pricenet.inference.predictor import Predictor

try:  # FastAPI resolves the endpoints' annotations in this module's globals
    from fastapi import FastAPI, Request, Response
    from fastapi.responses import JSONResponse
    from starlette.requests import ClientDisconnect
except ImportError:  # without the serve extra: serve() says what to install
    FastAPI = Request = Response = JSONResponse = None  # type: ignore[assignment,misc]

if TYPE_CHECKING:
    import pandas as pd

USAGE = """\
usage: pricenet-serve checkpoint=PATH [host=127.0.0.1] [port=8000] [allow_remote=false]
                      [max_body_bytes=8388608] [max_columns=1024] [max_cells=1000000]
                      [workers=2] [threads=1] [log_level=warning]

  checkpoint      a best.pt / last.pt, or a run folder (its best.pt is used)
  host, port      where to listen (port=0: any free port, printed at start)
  allow_remote    allow a host that is not a loopback address (the service has no auth)
  max_body_bytes  larger request bodies get HTTP 413
  max_columns     requests with more columns get HTTP 400 (counted before parsing a CSV)
  max_cells       requests with more values (rows x columns) get HTTP 400
  workers         processes that parse and predict (each loads the model; one that dies
                  is replaced)
  threads         torch threads for the predictions
  log_level       one of critical, error, warning, info (adds access lines), debug, trace

needs pip install 'pricenet[serve]'"""

JSON_TYPES = ("application/json",)
CSV_TYPES = ("text/csv", "application/csv")
SCALARS = (int, float, str, bool, type(None))
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")  # uvicorn's

log = logging.getLogger("uvicorn.error")  # uvicorn's log, filtered by log_level


@dataclass
class ServeOptions:
    checkpoint: str = MISSING
    host: str = "127.0.0.1"
    port: int = 8000
    allow_remote: bool = False
    max_body_bytes: int = 8 * 1024 * 1024
    max_columns: int = 1024
    max_cells: int = 1_000_000
    workers: int = 2
    threads: int = 1
    log_level: str = "warning"


class RequestError(Exception):
    """A request the service refuses: an HTTP status and a one-line reason."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


# --------------------------------------------------------------------------- request bodies


def media_type(content_type: str | None) -> str:
    """``text/csv; charset=utf-8`` -> ``text/csv``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


@dataclass(frozen=True)
class Limits:
    """How much one request may ask for: columns, and values (rows x columns)."""

    columns: int
    cells: int

    def check(self, columns: int, cells: int, what: str) -> None:
        """A 400 when ``columns`` or ``cells`` (``what`` says how they were counted) is over."""
        if columns > self.columns:
            raise RequestError(400, f"{columns} columns, over max_columns={self.columns}")
        if cells > self.cells:
            raise RequestError(400, f"{cells} values ({what}), over max_cells={self.cells}")


def _not_json(constant: str) -> None:
    raise ValueError(f"{constant} is not a JSON value")


def json_rows(body: bytes, limits: Limits | None = None) -> list[dict[str, Any]]:
    """The row objects of a JSON body: one object, a list, or ``{"rows": [...]}``."""
    try:
        data = json.loads(body, parse_constant=_not_json)
    except RecursionError:
        raise RequestError(400, "body is not valid JSON (nested too deeply)") from None
    except (UnicodeDecodeError, ValueError) as err:
        raise RequestError(400, f"body is not valid JSON ({err})") from None
    if isinstance(data, dict) and isinstance(data.get("rows"), list):
        data = data["rows"]
    rows = [data] if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise RequestError(422, 'expected a row object, a list of them, or {"rows": [...]}')
    if not rows:
        raise RequestError(422, "no rows to predict")
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise RequestError(422, f"row {number}: expected an object, got {type(row).__name__}")
    if limits is not None:
        limits.check(len(set().union(*rows)), sum(map(len, rows)), "keys in the row objects")
    for number, row in enumerate(rows, start=1):
        for key, value in row.items():
            if not isinstance(value, SCALARS):
                kind = type(value).__name__
                raise RequestError(422, f"column {key!r}, row {number}: a {kind} is not a value")
    return rows


def csv_columns(body: bytes) -> int:
    """The number of columns in a CSV body's header, without parsing the rest of the body."""
    end = body.find(b"\n")
    first = body if end < 0 else body[:end]
    if b'"' not in first:  # unquoted: every comma separates two names
        return first.count(b",") + 1
    text = io.TextIOWrapper(io.BytesIO(body), encoding="utf-8-sig", newline="")
    try:
        return len(next(csv.reader(text), []))
    except (csv.Error, UnicodeDecodeError) as err:
        raise RequestError(422, f"CSV header: {err}") from None


def check_csv_size(body: bytes, limits: Limits) -> None:
    """Refuse a CSV body over ``limits`` from its header and its line count (an upper bound on
    its rows), before pandas builds a column for each name."""
    columns = csv_columns(body)
    lines = body.count(b"\n") + (not body.endswith(b"\n"))
    limits.check(columns, columns * max(lines - 1, 0), f"{columns} columns x {lines - 1} lines")


def csv_frame(body: bytes, text_columns: tuple[str, ...] = ()) -> pd.DataFrame:
    """A CSV body as a frame (the validator reports what is not a number); ``text_columns``
    (the ids) are kept as the text sent."""
    import pandas as pd

    try:
        frame = pd.read_csv(
            io.BytesIO(body),
            na_filter=False,
            encoding="utf-8-sig",
            dtype=dict.fromkeys(text_columns, str),
        )
    except pd.errors.EmptyDataError:
        raise RequestError(422, "CSV body is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise RequestError(422, f"CSV body: {first_line(err)}") from None
    if frame.empty:
        raise RequestError(422, "CSV body has a header but no data rows")
    frame.index = range(1, len(frame) + 1)
    return frame


# --------------------------------------------------------------------------- the service


class Service:
    """The loaded predictor and the answers it gives, independent of the web framework."""

    def __init__(
        self, predictor: Predictor, checkpoint: str, max_body_bytes: int, limits: Limits
    ) -> None:
        self.predictor = predictor
        self.checkpoint_name = Path(checkpoint).name  # never the server's own path
        self.max_body_bytes = max_body_bytes
        self.limits = limits
        self.label = predictor.label_name
        self.classes = json_value(list(predictor.class_labels))
        self.class_keys = [str(c) for c in self.classes]
        self.probability_columns = [f"prob_{c}" for c in predictor.class_labels]
        # the id column a request may carry: the schema's, else one named "id"
        self.id_names = tuple(dict.fromkeys(n for n in (predictor.schema.id, "id") if n))

    def schema(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint_name,
            "features": self.predictor.feature_names,
            "label": self.label,
            "classes": self.classes,
            "max_body_bytes": self.max_body_bytes,
            "max_columns": self.limits.columns,
            "max_cells": self.limits.cells,
        }

    def id_column(self, columns: Any) -> str | None:
        """The id column among ``columns``, if any."""
        return next((name for name in self.id_names if name in columns), None)

    def _predict(self, frame: pd.DataFrame, id_name: str | None) -> pd.DataFrame:
        """Label and probabilities per row of ``frame`` (index 1..n), the sent ids dropped
        first (the answer's id column is the caller's); a 422 for an invalid row or an answer
        that is not a finite probability."""
        if id_name is not None and id_name != self.predictor.schema.id:
            frame = frame.drop(columns=[id_name])  # not the schema's: not the validator's
        try:
            result = self.predictor.predict(frame)
        except PricenetError as err:
            raise RequestError(422, str(err)) from None
        probs = result[self.probability_columns].to_numpy(dtype=np.float64)
        bad = ~np.isfinite(probs).all(axis=1)
        if bad.any():
            row = int(frame.index[np.argmax(bad)])
            raise RequestError(
                422,
                f"row {row}: the model's probabilities are not finite numbers "
                "(are its values far outside the training data's?)",
            )
        return result[[self.label, *self.probability_columns]]

    def predict_json(self, body: bytes) -> bytes:
        """The JSON answer for a JSON body: ids as sent, else the row number."""
        import pandas as pd

        rows = json_rows(body, self.limits)
        numbers = range(1, len(rows) + 1)
        frame = pd.DataFrame.from_records(rows, index=numbers)
        id_name = self.id_column(frame.columns)
        ids = [row.get(id_name, n) if id_name else n for row, n in zip(rows, numbers, strict=True)]
        result = self._predict(frame, id_name)
        labels = json_value(result[self.label].tolist())
        probs = result[self.probability_columns].to_numpy(dtype=np.float64).tolist()
        keys = self.class_keys
        predictions = [
            {"id": i, self.label: y, "probabilities": dict(zip(keys, p, strict=True))}
            for i, y, p in zip(ids, labels, probs, strict=True)
        ]
        try:
            return json.dumps({"predictions": predictions}, allow_nan=False).encode()
        except ValueError as err:  # strict JSON or nothing
            raise RequestError(500, f"the answer is not strict JSON ({err})") from None

    def predict_csv(self, body: bytes) -> bytes:
        """The CSV ``pricenet.predict`` writes, for a CSV body: ids as sent, else row numbers."""
        check_csv_size(body, self.limits)
        frame = csv_frame(body, self.id_names)
        id_name = self.id_column(frame.columns)
        result = self._predict(frame, id_name)
        ids = frame[id_name] if id_name else frame.index.to_series()
        result.insert(0, id_name or self.predictor.id_name, ids.to_numpy())
        return result.to_csv(index=False, float_format="%.6f").encode()

    def answer(self, kind: str, body: bytes) -> bytes:
        """The answer to a ``kind`` body (a JSON or a CSV media type); runs in a worker thread."""
        return self.predict_csv(body) if kind in CSV_TYPES else self.predict_json(body)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"body of {declared} bytes is over the limit of {limit} bytes")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(413, f"body is over the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise Dropped(request, f"before its body was complete ({size} bytes)") from None
    return b"".join(chunks)


class Dropped(Exception):
    """A client that went away: one log line, no answer to send."""

    def __init__(self, request: Request, when: str) -> None:
        client = request.client
        who = f"{client.host}:{client.port}" if client else "a client"
        super().__init__(f"{who} disconnected {when}")


class RefuseAmbiguousLength:
    """ASGI middleware: a request with both Content-Length and Transfer-Encoding gets 400 and
    its connection closed, since a proxy in front may have framed its body otherwise
    (request smuggling, RFC 9112 section 6.3)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            names = {name.lower() for name, _ in scope["headers"]}
            if b"content-length" in names and b"transfer-encoding" in names:
                detail = "both Content-Length and Transfer-Encoding: send one"
                response = JSONResponse(
                    {"detail": detail}, status_code=400, headers={"connection": "close"}
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


PREDICT_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"type": "object", "description": "one row: feature name -> value"},
                        {"type": "array", "items": {"type": "object"}},
                        {
                            "type": "object",
                            "properties": {"rows": {"type": "array", "items": {"type": "object"}}},
                        },
                    ]
                }
            },
            "text/csv": {"schema": {"type": "string", "description": "header + rows"}},
        },
    },
    "responses": {
        "200": {
            "description": "labels and class probabilities (JSON or CSV, as sent)",
            "content": {"application/json": {}, "text/csv": {}},
        },
        "400": {"description": "malformed JSON"},
        "413": {"description": "body over max_body_bytes"},
        "415": {"description": "body neither application/json nor text/csv"},
        "422": {"description": "an invalid row: column, row and what is wrong"},
        "503": {"description": "the worker process answering died; the workers were restarted"},
    },
}


# --------------------------------------------------------------------------- worker processes

_worker_service: Service | None = None  # in a worker process: the service it answers for


def _start_worker(checkpoint: str, max_body_bytes: int, limits: Limits, threads: int) -> None:
    """Load the model in a new worker process (Ctrl+C is the parent's to handle)."""
    global _worker_service
    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    torch.set_num_threads(threads)
    predictor = Predictor.from_checkpoint(checkpoint)
    _worker_service = Service(predictor, checkpoint, max_body_bytes, limits)
    gc.collect()
    gc.freeze()  # the loaded model and libraries: no longer scanned by each collection


def _answer_in_worker(kind: str, body: bytes) -> tuple[int, bytes]:
    """The status and JSON or CSV body answering ``body``; runs in a worker process."""
    assert _worker_service is not None, "worker started without _start_worker"
    try:
        return 200, _worker_service.answer(kind, body)
    except RequestError as err:
        return err.status, json.dumps({"detail": err.detail}).encode()


class Workers:
    """A pool of worker processes answering requests, restarted when one dies."""

    def __init__(self, count: int, checkpoint: str, service: Service, threads: int) -> None:
        self.count = count
        self.initargs = (checkpoint, service.max_body_bytes, service.limits, threads)
        self.pool = self._new_pool()
        # start them all now, so the first requests do not wait for a model to load
        try:
            for started in [self.pool.submit(os.getpid) for _ in range(count)]:
                started.result()
        except BrokenProcessPool:
            self.pool.shutdown(wait=False)
            raise CheckpointError(f"{checkpoint}: a worker process could not load it") from None

    @staticmethod
    def start_forkserver() -> None:
        """Start the process the workers fork from, importing torch, pandas and the model code
        once (workers are forked from it, never from the threaded server). Called early, its
        imports overlap the server's own loading of the model. (Not this module: a worker
        runs it as its main module, which runpy warns about when it is already imported.)"""
        multiprocessing.forkserver.set_forkserver_preload(
            ["pricenet.inference.predictor", "fastapi"]
        )
        multiprocessing.forkserver.ensure_running()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            self.count,
            mp_context=multiprocessing.get_context("forkserver"),
            initializer=_start_worker,
            initargs=self.initargs,
        )

    async def answer(self, kind: str, body: bytes) -> tuple[int, bytes]:
        """The status and body answering ``body``, computed in a worker process.

        A worker that died (killed, out of memory, a crash) breaks the whole pool: the
        requests it held get a 503 and the pool is replaced, once, for the next ones. A
        request that arrives after a death already seen goes to the new pool at once.
        """
        pool = self.pool
        try:
            future = pool.submit(_answer_in_worker, kind, body)
        except BrokenProcessPool:  # the pool broke between requests: this one was never sent
            pool = self._replace(pool)
            future = pool.submit(_answer_in_worker, kind, body)
        try:
            return await asyncio.wrap_future(future)
        except BrokenProcessPool:
            self._replace(pool)
            raise RequestError(
                503,
                "the worker process answering this request died (killed, or out of memory?); "
                "the workers were restarted",
            ) from None

    def _replace(self, broken: ProcessPoolExecutor) -> ProcessPoolExecutor:
        """A new pool in place of ``broken`` (unless another request replaced it already)."""
        if self.pool is broken:
            broken.shutdown(wait=False, cancel_futures=True)
            self.pool = self._new_pool()
            log.error(
                "a worker process died (killed, or out of memory?); the workers were restarted"
            )
        return self.pool

    def close(self) -> None:
        """Let running requests finish, then stop the processes."""
        self.pool.shutdown(wait=True, cancel_futures=True)


def create_app(service: Service, workers: Workers) -> FastAPI:
    """The FastAPI application answering for ``service``; ``workers`` parse and predict, so the
    event loop only moves bytes and ``/health`` stays quick."""
    app = FastAPI(
        title="pricenet",
        description=f"Predictions of {service.label} by the model {service.checkpoint_name}",
        version="1",
    )
    app.add_middleware(RefuseAmbiguousLength)

    @app.exception_handler(RequestError)
    async def refused(_request: Request, err: RequestError) -> Response:
        headers = {"retry-after": "1"} if err.status == 503 else None  # the new workers start
        return JSONResponse({"detail": err.detail}, status_code=err.status, headers=headers)

    @app.exception_handler(Dropped)
    async def dropped(_request: Request, err: Dropped) -> Response:
        log.warning("%s", err)
        return Response(status_code=400)  # no one is there to read it

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Whether the service is up (the model is loaded before it starts listening)."""
        return {"status": "ok"}

    @app.get("/schema")
    async def schema() -> dict[str, Any]:
        """The checkpoint's input features (in order), label name, classes and limits."""
        return service.schema()

    @app.post("/predict", openapi_extra=PREDICT_OPENAPI)
    async def predict(request: Request) -> Response:
        """Labels and per-class probabilities for JSON rows or a CSV body."""
        kind = media_type(request.headers.get("content-type"))
        if kind not in JSON_TYPES and kind not in CSV_TYPES:
            sent = kind or "no content type"
            raise RequestError(415, f"{sent}: send application/json or text/csv")
        body = await read_body(request, service.max_body_bytes)
        status, answer = await workers.answer(kind, body)
        if await request.is_disconnected():
            raise Dropped(request, "before its answer was sent")
        if status != 200:
            return Response(answer, status_code=status, media_type=JSON_TYPES[0])
        return Response(answer, media_type="text/csv" if kind in CSV_TYPES else JSON_TYPES[0])

    return app


# --------------------------------------------------------------------------- start and stop


def is_loopback(host: str) -> bool:
    """True when every address ``host`` names is a loopback address."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def bind(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port``, or a ConfigError saying why not."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"port={port}: must be in 0..65535")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except OSError as err:
        raise ConfigError(f"host={host}: cannot be resolved ({err.strerror or err})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise ConfigError(f"port={port}: {host}:{port} is already in use") from None
        raise ConfigError(f"host={host} port={port}: cannot listen ({err.strerror})") from None
    sock.listen(2048)  # connections wait in the backlog until uvicorn accepts them
    return sock


def _require_serving_packages() -> None:
    for module in ("fastapi", "uvicorn"):
        try:
            __import__(module)
        except ImportError:
            raise ConfigError(f"serve needs {module!r}: pip install 'pricenet[serve]'") from None


def serve(options: ServeOptions) -> None:
    """Check the options, bind, load the model, then serve until SIGTERM or Ctrl+C."""
    _require_serving_packages()
    import torch
    import uvicorn

    if options.max_body_bytes < 1:
        raise ConfigError(f"max_body_bytes={options.max_body_bytes}: must be >= 1")
    for key in ("max_columns", "max_cells", "workers", "threads"):
        if getattr(options, key) < 1:
            raise ConfigError(f"{key}={getattr(options, key)}: must be >= 1")
    log_level = str(options.log_level).lower()
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"log_level={shown(options.log_level)}: one of {', '.join(LOG_LEVELS)}")
    if not options.allow_remote and not is_loopback(options.host):
        raise ConfigError(
            f"host={options.host}: not a loopback address; the service has no authentication, "
            "pass allow_remote=true to listen there anyway"
        )
    sock = bind(options.host, options.port)  # before the model loads: a busy port fails fast
    workers = None
    try:
        checkpoint = str(resolve_checkpoint(options.checkpoint))
        Workers.start_forkserver()
        torch.set_num_threads(options.threads)
        predictor = Predictor.from_checkpoint(checkpoint)
        features = len(predictor.feature_names) + 1  # and an id
        if options.max_columns < features:
            raise ConfigError(
                f"max_columns={options.max_columns}: below the checkpoint's {features - 1} "
                f"features and an id; pass max_columns={features} or more"
            )
        limits = Limits(options.max_columns, options.max_cells)
        service = Service(predictor, checkpoint, options.max_body_bytes, limits)
        workers = Workers(options.workers, checkpoint, service, options.threads)
        config = uvicorn.Config(
            create_app(service, workers),
            log_level=log_level,
            access_log=log_level in ("debug", "trace", "info"),
            timeout_graceful_shutdown=10,
        )
        server = uvicorn.Server(config)

        def stop(*_: Any) -> None:
            server.should_exit = True

        # A signal before uvicorn installs its handlers stops it as soon as it has started;
        # uvicorn shuts down gracefully, then re-raises the signal it caught, which this
        # handler absorbs: SIGTERM and Ctrl+C end with exit status 0 and no traceback.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, stop)
        host, port = sock.getsockname()[:2]
        where = f"[{host}]" if ":" in host else host
        print(
            f"serving {options.checkpoint} on http://{where}:{port} (docs: /docs); "
            "stop with Ctrl+C or SIGTERM",
            flush=True,
        )
        server.run(sockets=[sock])
    finally:
        sock.close()
        if workers is not None:
            workers.close()
    print("stopped", flush=True)


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    """The ``pricenet-serve`` command."""
    serve(parse_options(sys.argv[1:] if argv is None else argv, ServeOptions, USAGE))


if __name__ == "__main__":
    main()
