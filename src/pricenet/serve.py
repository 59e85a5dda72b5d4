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

Rows are numbered from 1 in the order sent (also the ``id`` when none is given); an invalid
row gets HTTP 422 with the message the command line gives. A body that is neither JSON nor
CSV gets 415, one over ``max_body_bytes`` gets 413. Request data is parsed as JSON or CSV
text only, never unpickled. The model is loaded once, at start.

The service binds to a loopback address unless ``allow_remote=true``: it has no
authentication, so exposing it is a decision to make explicitly (behind a proxy that has).
"""

from __future__ import annotations

import errno
import gc
import io
import ipaddress
import json
import math
import signal
import socket
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from omegaconf import MISSING

from pricenet.cli import parse_options
from pricenet.errors import ConfigError, PricenetError, exit_on_user_error
from pricenet.predict import Predictor

try:  # FastAPI resolves the endpoints' annotations in this module's globals
    from fastapi import FastAPI, Request, Response
    from fastapi.responses import JSONResponse
except ImportError:  # without the serve extra: serve() says what to install
    FastAPI = Request = Response = JSONResponse = None  # type: ignore[assignment,misc]

if TYPE_CHECKING:
    import pandas as pd

USAGE = """\
usage: pricenet-serve checkpoint=PATH [host=127.0.0.1] [port=8000] [allow_remote=false]
                      [max_body_bytes=8388608] [threads=1] [log_level=warning]

  checkpoint      a best.pt / last.pt, or a run folder (its best.pt is used)
  host, port      where to listen (port=0: any free port, printed at start)
  allow_remote    allow a host that is not a loopback address (the service has no auth)
  max_body_bytes  larger request bodies get HTTP 413
  threads         torch threads for the predictions
  log_level       uvicorn's log level (access lines from info)

needs pip install 'pricenet[serve]'"""

JSON_TYPES = ("application/json",)
CSV_TYPES = ("text/csv", "application/csv")
SCALARS = (int, float, str, bool, type(None))


@dataclass
class ServeOptions:
    checkpoint: str = MISSING
    host: str = "127.0.0.1"
    port: int = 8000
    allow_remote: bool = False
    max_body_bytes: int = 8 * 1024 * 1024
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


def json_rows(body: bytes) -> list[dict[str, Any]]:
    """The row objects of a JSON body: one object, a list, or ``{"rows": [...]}``."""
    try:
        data = json.loads(body)
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
        for key, value in row.items():
            if not isinstance(value, SCALARS):
                kind = type(value).__name__
                raise RequestError(422, f"column {key!r}, row {number}: a {kind} is not a value")
    return rows


def json_frame(body: bytes) -> pd.DataFrame:
    import pandas as pd

    rows = json_rows(body)
    return pd.DataFrame.from_records(rows, index=range(1, len(rows) + 1))


def csv_frame(body: bytes) -> pd.DataFrame:
    """A CSV body as text cells (the validator reports what is not a number)."""
    import pandas as pd

    try:
        frame = pd.read_csv(io.BytesIO(body), na_filter=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise RequestError(422, "CSV body is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RequestError(422, f"CSV body: {first}") from None
    if frame.empty:
        raise RequestError(422, "CSV body has a header but no data rows")
    frame.index = range(1, len(frame) + 1)
    return frame


# --------------------------------------------------------------------------- the service


class Service:
    """The loaded predictor and the answers it gives, independent of the web framework."""

    def __init__(self, predictor: Predictor, checkpoint: str, max_body_bytes: int) -> None:
        self.predictor = predictor
        self.checkpoint = checkpoint
        self.max_body_bytes = max_body_bytes
        self.label = predictor.label_name
        self.classes = [_plain(c) for c in predictor.class_labels]
        self.class_keys = [str(c) for c in self.classes]

    def schema(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "features": self.predictor.feature_names,
            "label": self.label,
            "classes": self.classes,
            "max_body_bytes": self.max_body_bytes,
        }

    def _predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        try:
            return self.predictor.predict(frame)
        except PricenetError as err:
            raise RequestError(422, str(err)) from None

    def predict_json(self, body: bytes) -> bytes:
        result = self._predict(json_frame(body))
        ids = [_plain(v) for v in result.iloc[:, 0].tolist()]
        labels = [_plain(v) for v in result[self.label].tolist()]
        probs = result.iloc[:, -len(self.classes) :].to_numpy(dtype=np.float64).tolist()
        keys = self.class_keys
        predictions = [
            {"id": i, self.label: y, "probabilities": dict(zip(keys, p, strict=True))}
            for i, y, p in zip(ids, labels, probs, strict=True)
        ]
        return json.dumps({"predictions": predictions}).encode()

    def predict_csv(self, body: bytes) -> bytes:
        result = self._predict(csv_frame(body))
        return result.to_csv(index=False, float_format="%.6f").encode()


def _plain(value: Any) -> Any:
    """numpy scalars as Python values; non-finite floats as None (strict JSON)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"body of {declared} bytes is over the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


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
    },
}


def create_app(service: Service) -> FastAPI:
    """The FastAPI application answering for ``service``."""
    app = FastAPI(
        title="pricenet",
        description=f"Predictions of {service.label} by the model in {service.checkpoint}",
        version="1",
    )

    @app.exception_handler(RequestError)
    async def refused(_request: Request, err: RequestError) -> Response:
        return JSONResponse({"detail": err.detail}, status_code=err.status)

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Whether the service is up (the model is loaded before it starts listening)."""
        return {"status": "ok"}

    @app.get("/schema")
    async def schema() -> dict[str, Any]:
        """The checkpoint's input features (in order), label name and classes."""
        return service.schema()

    @app.post("/predict", openapi_extra=PREDICT_OPENAPI)
    async def predict(request: Request) -> Response:
        """Labels and per-class probabilities for JSON rows or a CSV body."""
        kind = media_type(request.headers.get("content-type"))
        if kind not in JSON_TYPES and kind not in CSV_TYPES:
            shown = kind or "no content type"
            raise RequestError(415, f"{shown}: send application/json or text/csv")
        body = await read_body(request, service.max_body_bytes)
        if kind in CSV_TYPES:
            return Response(service.predict_csv(body), media_type="text/csv")
        return Response(service.predict_json(body), media_type="application/json")

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
    if options.threads < 1:
        raise ConfigError(f"threads={options.threads}: must be >= 1")
    if not options.allow_remote and not is_loopback(options.host):
        raise ConfigError(
            f"host={options.host}: not a loopback address; the service has no authentication, "
            "pass allow_remote=true to listen there anyway"
        )
    sock = bind(options.host, options.port)  # before the model loads: a busy port fails fast
    try:
        torch.set_num_threads(options.threads)
        predictor = Predictor.from_checkpoint(options.checkpoint)
        service = Service(predictor, options.checkpoint, options.max_body_bytes)
        config = uvicorn.Config(
            create_app(service),
            log_level=options.log_level,
            access_log=options.log_level in ("debug", "trace", "info"),
            timeout_graceful_shutdown=10,
        )
        server = uvicorn.Server(config)
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        print(
            f"serving {options.checkpoint} on http://{shown}:{port} (docs: /docs); "
            "stop with Ctrl+C or SIGTERM",
            flush=True,
        )
        # uvicorn shuts down gracefully, then re-raises the signal it caught: these handlers
        # make that a no-op, so SIGTERM and Ctrl+C end with exit status 0 and no traceback.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: None)
        gc.collect()
        gc.freeze()  # the loaded model and libraries: no longer scanned by each collection
        server.run(sockets=[sock])
    finally:
        sock.close()
    print("stopped", flush=True)


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    """The ``pricenet-serve`` command."""
    serve(parse_options(sys.argv[1:] if argv is None else argv, ServeOptions, USAGE))


if __name__ == "__main__":
    main()
