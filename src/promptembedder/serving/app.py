"""The OpenAI-compatible embeddings service: FastAPI app, run by uvicorn.

`POST /v1/embeddings`, `GET /v1/models`, `GET /health`. Every error has OpenAI's shape
`{"error": {"message", "type", "param", "code"}}`, a server's own failure included (500, never plain text).
With an API key, every path but `/health` (load-balancer probes) needs `Authorization: Bearer KEY`, as the openai
client sends it. SIGINT/SIGTERM stop accepting connections; the requests in flight get `grace_period_s` to
finish, and those that cannot are answered 503 before the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import math
import time
import warnings
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from .batcher import DynamicBatcher, Overloaded, ShuttingDown
from .schema import (
    APIError,
    Limits,
    check_dimensions,
    check_positive,
    embedding_response,
    error_body,
    parse_request,
    shape_embeddings,
)

#: uvicorn's own log (its handlers and level), so our lines appear with its lines.
log = logging.getLogger("uvicorn.error")
#: Paths served without the API key: a health probe cannot always send one.
OPEN_PATHS = frozenset({"/health"})
#: Environment variable `serve` reads the key from (the same as `--api-key`).
API_KEY_ENV = "PROMPTEMBEDDER_API_KEY"
_SERVER_ERROR = error_body("the server failed to answer this request (its log has the cause)", type="server_error")


@dataclass
class ServerSettings:
    model_name: str
    max_batch_size: int = 64
    max_wait_ms: float = 5.0
    max_queue: int = 4096
    limits: Limits = field(default_factory=Limits)
    #: After SIGTERM/SIGINT, how long requests in flight may take before they are answered 503.
    grace_period_s: float = 30.0
    api_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        """Checked before a model is loaded: a bad value would otherwise fail after minutes, or on every request."""
        check_positive(max_batch_size=self.max_batch_size, max_queue=self.max_queue)
        for name, value in (("max_wait_ms", self.max_wait_ms), ("grace_period", self.grace_period_s)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"--{name.replace('_', '-')} must be a number >= 0, got {value}")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("the API key is empty: give a non-empty --api-key (or unset it to serve without one)")


class _RequireKey:
    """ASGI middleware: 401 in OpenAI's shape unless `Authorization: Bearer KEY` (the scheme in any case, as HTTP
    has it; the key compared in constant time)."""

    def __init__(self, app, key: str):
        self.app, self.expected = app, key.encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            given = dict(scope["headers"]).get(b"authorization", b"")
            scheme, _, token = given.partition(b" ")
            if not (scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.expected)):
                message = ("invalid API key" if given else
                           "no API key: send it as 'Authorization: Bearer KEY' (the openai client's api_key)")
                response = JSONResponse(error_body(message, code="invalid_api_key"), status_code=401,
                                        headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _read_body(request: Request, limits: Limits) -> bytes:
    """The body, refused with 413 as soon as it passes the size limit (declared or streamed), and with 408 when it
    has not all arrived within `limits.body_timeout` seconds."""
    limit = limits.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"request body is {declared} bytes; the limit is {limit}", code="request_too_large")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(limits.body_timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise APIError(413, f"request body is over the limit of {limit} bytes", code="request_too_large")
                chunks.append(chunk)
    except TimeoutError:
        raise APIError(408, f"request body not received within {limits.body_timeout:g} s ({size} bytes came): send "
                       "it whole, or raise the server's --body-timeout", code="request_timeout") from None
    return b"".join(chunks)


async def _until_disconnected(request: Request) -> None:
    """Returns when the client goes away. With the body read, the server's next ASGI message is the disconnect,
    so this waits on it instead of polling (32 clients polling every 50 ms cost measurable CPU)."""
    while (await request.receive())["type"] != "http.disconnect":
        continue


def _client(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "a client"


def _gone(request: Request, when: str) -> JSONResponse:
    """A client that left: one line in the log (it is routine), and a 499 nobody will read."""
    log.info("%s disconnected %s", _client(request), when)
    return JSONResponse(error_body("client disconnected"), status_code=499)


def create_app(backend, settings: ServerSettings) -> FastAPI:
    """The app for one model; `backend` is an EmbedderBackend or SentenceTransformerBackend (serving.backend)."""

    def encode(texts: list[str], key) -> tuple:
        """Embeddings and each text's token count (usage), both in the encoding thread: tokenizers are not
        thread-safe, and a second trip to that thread would queue behind the next batch."""
        return backend.encode(texts, key), backend.token_counts(texts)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher = DynamicBatcher(encode, settings.max_batch_size, settings.max_wait_ms, settings.max_queue)
        batcher.start()
        app.state.batcher = batcher
        yield
        await batcher.close(settings.grace_period_s)

    app = FastAPI(title="promptembedder", lifespan=lifespan)
    if settings.api_key is not None:
        app.add_middleware(_RequireKey, key=settings.api_key)
    created = int(time.time())

    @app.exception_handler(APIError)
    async def api_error(request: Request, err: APIError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body(str(err.detail), code=str(err.status_code)), status_code=err.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body(f"invalid request: {err.errors()[0]['msg']}"), status_code=400)

    @app.exception_handler(Exception)
    async def server_error(request: Request, err: Exception) -> JSONResponse:
        """A bug of ours: OpenAI's shape for the client; Starlette re-raises it, so uvicorn logs the traceback."""
        return JSONResponse(_SERVER_ERROR, status_code=500)

    @app.get("/health")
    async def health() -> dict:
        batcher = getattr(app.state, "batcher", None)
        counts = {name: getattr(batcher, name, 0) for name in ("queued", "in_flight", "batches")}
        cache = getattr(backend, "prompt_cache", None)
        sizes = {} if cache is None else {"prompt_cache": {"size": len(cache), "max_size": cache.max_size}}
        return {"status": "ok", "model": settings.model_name, **counts, **sizes}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": settings.model_name, "object": "model", "created": created,
                                            "owned_by": "promptembedder"}]}

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> JSONResponse:
        try:
            body = await _read_body(request, settings.limits)
        except ClientDisconnect:
            return _gone(request, "while sending its request")
        parsed, texts = parse_request(body, settings.limits)
        if parsed.model is not None and parsed.model != settings.model_name:
            raise APIError(404, f"model {parsed.model!r} not found; this server serves {settings.model_name!r}",
                           param="model", code="model_not_found")
        if len(texts) > settings.max_queue:
            raise APIError(413, f"input has {len(texts)} texts; this server queues at most {settings.max_queue} "
                           "(--max-queue): split the request", param="input", code="request_too_large")
        check_dimensions(parsed.dimensions, backend.dimension)  # before any work is queued
        key = backend.key(parsed.instruction, parsed.task, parsed.prompt_type)
        job = asyncio.ensure_future(app.state.batcher.submit(texts, key))
        watcher = asyncio.ensure_future(_until_disconnected(request))
        try:
            await asyncio.wait({job, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
        if not job.done():  # the client went away: its batches not encoded yet are dropped
            job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await job
            return _gone(request, f"before its {len(texts)} embeddings were ready; the rest of its work is dropped")
        try:
            vectors, counts = job.result()
        except ShuttingDown as err:
            raise APIError(503, f"{err}; retry on another replica", type="server_error", code="shutting_down",
                           headers={"Retry-After": "1"}) from None
        except Overloaded as err:
            raise APIError(503, f"server overloaded: {err}; retry later", type="server_error", code="overloaded",
                           headers={"Retry-After": "1"}) from None
        except APIError:
            raise  # the backend found the client's mistake (e.g. an instruction longer than P's context)
        except Exception:
            log.exception("encoding failed for a request from %s", _client(request))
            return JSONResponse(_SERVER_ERROR, status_code=500)
        vectors = shape_embeddings(vectors, parsed.dimensions, backend.dimension)
        return JSONResponse(embedding_response(vectors, settings.model_name, parsed.encoding_format, sum(counts)))

    return app


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may well resolve to a public address


def check_port(port: int) -> None:
    """Before loading: a port no socket can have (uvicorn would fail with OverflowError after the load)."""
    if not 0 <= port <= 65535:
        raise ValueError(f"--port must be between 0 and 65535, got {port}")


def serve(backend, settings: ServerSettings, host: str = "127.0.0.1", port: int = 8000,
          log_level: str = "info") -> None:
    """Run the app under uvicorn until SIGINT/SIGTERM: requests in flight get `settings.grace_period_s` to
    finish, the rest are answered 503, then the process exits (after the batch being encoded, if any)."""
    import uvicorn

    check_port(port)
    if settings.api_key is None and not _is_loopback(host):
        warnings.warn(f"serving on {host} without an API key: anyone who reaches this port can use the model; "
                      f"set --api-key or {API_KEY_ENV}", stacklevel=2)
    app = create_app(backend, settings)

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            super().handle_exit(sig, frame)
            batcher = getattr(app.state, "batcher", None)
            if batcher is not None:  # the grace period starts at the signal, not when the connections are done
                batcher.drain_threadsafe(settings.grace_period_s)

    # uvicorn waits a little longer than the grace period, for the 503s to be written
    Server(uvicorn.Config(app, host=host, port=port, log_level=log_level,
                          timeout_graceful_shutdown=settings.grace_period_s + 5)).run()
