"""The HTTP side: FastAPI routes, API-key check, request limits, SSE streaming.

Handlers validate and tokenize, then hand the work to the runner's model thread and await
its events; nothing here computes on the model, so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from jinja2 import TemplateError
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..engine import Engine
from ..engine.sampling import Sampler
from ..errors import SparsetierError
from ..tokenizer import ChatTemplateError, encode_chat
from . import protocol
from .errors import APIError, bad_request, error_body, install_handlers
from .metrics import Metrics
from .runner import Event, Job, Runner


@dataclass
class ServerConfig:
    model_name: str  # the id /v1/models lists; requests must name it (or an alias)
    aliases: tuple[str, ...] = ()
    api_key: str | None = None
    max_queue: int = 64  # requests waiting for a slot before new ones get 429
    prefill_chunk: int = 256  # prompt tokens per step: bounds the stall a new prompt causes
    max_body_bytes: int = 4 << 20


GONE = "client disconnected"
_ROUTES = {"/v1/models", "/v1/completions", "/v1/chat/completions", "/health", "/metrics"}


class CountRequests:
    """Pure ASGI middleware (no buffering, so streams and disconnects pass straight through)."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        route = path if path in _ROUTES else "other"  # a bounded label set, whatever clients send
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.requests.labels(route, str(status)).inc()


class EventStream(StreamingResponse):
    """SSE response that runs `on_close` however it ends: finished, failed, or client gone."""

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], None]):
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


def sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False, separators=(',', ':'))}\n\n"


async def read_json(request: Request, limit: int) -> object:
    """The body as JSON, refusing more than `limit` bytes without reading them all."""
    too_large = APIError(413, f"the request body is larger than {limit} bytes", code="request_too_large")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise too_large
    if not body:
        raise bad_request("the request body is empty: send a JSON object", code="invalid_json")
    try:
        # a body of megabytes takes tens of ms to decode: not on the event loop
        return json.loads(body) if len(body) < 256 << 10 else await asyncio.to_thread(json.loads, body)
    except (ValueError, RecursionError) as e:
        raise bad_request(f"the request body is not valid JSON: {e}", code="invalid_json") from None


class Server:
    """Per-app state: the engine, its runner, metrics, and the admission count."""

    def __init__(self, engine: Engine, config: ServerConfig):
        self.engine, self.config = engine, config
        n_slots = len(engine.slots)
        self.metrics = Metrics(n_slots, n_slots * engine.ctx_size)
        self.runner = Runner(engine, self.metrics, config.prefill_chunk)
        self.capacity = n_slots + config.max_queue
        self.inflight = 0  # admitted and not yet answered; only touched on the event loop
        self.started = int(time.time())

    # --- checks ---------------------------------------------------------------------------

    async def check_key(self, request: Request) -> None:
        key = self.config.api_key
        if not key:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        # headers arrive latin-1 decoded: encode back to the bytes the client sent
        ok = hmac.compare_digest(given.strip().encode("latin-1", "replace"), key.encode())
        if scheme.lower() != "bearer" or not ok:
            raise APIError(
                401, "invalid or missing API key: send 'Authorization: Bearer KEY'", code="invalid_api_key"
            )

    def check_model(self, name: str) -> None:
        if name != self.config.model_name and name not in self.config.aliases:
            raise APIError(
                404,
                f"model '{name}' not found: this server serves '{self.config.model_name}'",
                param="model",
                code="model_not_found",
            )

    def admit(self) -> None:
        if not self.runner.alive:
            raise APIError(
                503, "the model worker is not running", type="server_error", code="engine_unavailable"
            )
        if self.inflight >= self.capacity:
            raise APIError(
                429,
                f"server busy: {self.inflight} requests in flight and the queue is full",
                type="rate_limit_error",
                code="queue_full",
                headers={"Retry-After": "1"},
            )
        self.inflight += 1

    def release(self, job: Job | None) -> None:
        if job is not None:
            self.runner.cancel(job)  # no-op for a finished job; frees the slot of an abandoned one
        self.inflight -= 1

    # --- prompts --------------------------------------------------------------------------

    async def completion_prompt(self, prompt: str | list[str] | list[int]) -> list[int]:
        if isinstance(prompt, list) and (not prompt or isinstance(prompt[0], int)):
            vocab = self.engine.cfg.vocab_size
            if any(not 0 <= t < vocab for t in prompt):
                raise bad_request(f"prompt token ids must be in [0, {vocab})", param="prompt")
            return list(prompt)
        text = prompt[0] if isinstance(prompt, list) else prompt
        # long prompts take a while to tokenize: keep the event loop free meanwhile
        return await asyncio.to_thread(self.engine.tokenizer.encode, text)

    async def chat_prompt(self, req: protocol.ChatRequest) -> list[int]:
        try:
            return await asyncio.to_thread(encode_chat, self.engine.tokenizer, req.chat_messages())
        except (ChatTemplateError, TemplateError) as e:  # templates refuse some conversations
            message = f"the model's chat template rejected the messages: {e}"
            raise bad_request(message, param="messages") from None

    def max_tokens(self, prompt: list[int], asked: int | None, default: int | None, param: str) -> int:
        n, ctx = len(prompt), self.engine.ctx_size
        if n == 0:
            raise bad_request("the prompt is empty (no tokens)", param="prompt")
        if n >= ctx:
            raise bad_request(
                f"the prompt has {n} tokens but the context size is {ctx}",
                param="prompt",
                code="context_length_exceeded",
            )
        if asked is None:
            return min(default or ctx, ctx - n)
        if n + asked > ctx:
            raise bad_request(
                f"{param}={asked} plus the prompt's {n} tokens exceeds the context size of "
                f"{ctx} (at most {ctx - n})",
                param=param,
                code="context_length_exceeded",
            )
        return asked

    # --- generation -----------------------------------------------------------------------

    async def respond(
        self,
        request: Request,
        req: protocol.GenerationRequest,
        prompt_of: Callable[[], Awaitable[list[int]]],
        asked: int | None,
        default_max: int | None,
        param: str,
        chat: bool,
    ) -> Response:
        """Admit the request, then tokenize, submit, and answer (a JSON body or an SSE stream)."""
        try:
            sampler = Sampler(req.sampling())
        except SparsetierError as e:
            raise bad_request(str(e)) from None
        self.admit()  # before tokenizing, so a flood is refused before it costs anything
        job, handed_over = None, False
        try:
            prompt = await prompt_of()
            max_tokens = self.max_tokens(prompt, asked, default_max, param)
            job = self.runner.submit(prompt, sampler, max_tokens, req.stops(), req.ignore_eos)
            id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
            if req.stream:
                stream = self._stream(job, id, req.model, chat, req.include_usage, len(prompt))
                handed_over = True  # the response releases the admission when it ends, however it ends
                return EventStream(stream, on_close=partial(self.release, job))
            text, last = await self._collect(request, job)
        finally:
            if not handed_over:
                self.release(job)
        use = protocol.usage(len(prompt), last.completion_tokens)
        build = protocol.chat if chat else protocol.completion
        return JSONResponse(build(id, req.model, text, last.finish_reason or "stop", use))

    async def _collect(self, request: Request, job: Job) -> tuple[str, Event]:
        async def watch() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            self.runner.cancel(job)
            job.outbox.put_nowait(Event(error=GONE))

        watcher = asyncio.create_task(watch())
        try:
            parts = []
            async for ev in self.runner.events(job):
                if ev.error == GONE:  # nobody will read this reply; 499 keeps it out of the 5xx count
                    raise APIError(499, ev.error, code="client_disconnected")
                if ev.error:
                    raise APIError(500, ev.error, type="server_error")
                parts.append(ev.text)
            return "".join(parts), ev
        finally:
            watcher.cancel()

    async def _stream(
        self, job: Job, id: str, model: str, chat: bool, include_usage: bool, n_prompt: int
    ) -> AsyncIterator[str]:
        def chunk(text: str, finish: str | None = None) -> dict:
            if chat:
                return protocol.chat_chunk(id, model, {"content": text} if text or not finish else {}, finish)
            return protocol.completion_chunk(id, model, text, finish)

        if chat:
            yield sse(protocol.chat_chunk(id, model, {"role": "assistant", "content": ""}, None))
        async for ev in self.runner.events(job):
            if ev.error:
                yield sse(error_body(ev.error, "server_error"))
                break
            if ev.text:
                yield sse(chunk(ev.text))
            if ev.finish_reason:
                yield sse(chunk("", ev.finish_reason))
                if include_usage:
                    obj = "chat.completion.chunk" if chat else "text_completion"
                    use = protocol.usage(n_prompt, ev.completion_tokens)
                    yield sse(protocol.usage_chunk(id, model, obj, use))
        yield "data: [DONE]\n\n"

    # --- status ---------------------------------------------------------------------------

    def health(self) -> tuple[int, dict]:
        load = self.runner.load()
        body = {
            "status": "ok" if self.runner.alive else "error",
            "model": self.config.model_name,
            "slots_total": len(self.engine.slots),
            "slots_busy": load["running"],
            "queue": load["waiting"],
            "in_flight": self.inflight,
        }
        return (200 if self.runner.alive else 503), body


def create_app(engine: Engine, config: ServerConfig) -> FastAPI:
    server = Server(engine, config)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        server.runner.start()
        yield
        await asyncio.to_thread(server.runner.stop)

    app = FastAPI(title="sparsetier", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = server
    install_handlers(app)
    app.add_middleware(CountRequests, metrics=server.metrics)

    @app.get("/health")
    async def health() -> JSONResponse:
        status, body = server.health()
        return JSONResponse(body, status_code=status)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(server.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(server.check_key)])

    def model_card() -> dict:
        return {
            "id": config.model_name,
            "object": "model",
            "created": server.started,
            "owned_by": "sparsetier",
        }

    @v1.get("/models")
    async def models() -> dict:
        return {"object": "list", "data": [model_card()]}

    @v1.get("/models/{name:path}")
    async def model(name: str) -> dict:
        server.check_model(name)
        return model_card()

    @v1.post("/completions")
    async def completions(request: Request) -> Response:
        req = protocol.parse(protocol.CompletionRequest, await read_json(request, config.max_body_bytes))
        server.check_model(req.model)
        # OpenAI's legacy completions default to 16 tokens
        prompt_of = partial(server.completion_prompt, req.prompt)
        return await server.respond(request, req, prompt_of, req.max_tokens, 16, "max_tokens", chat=False)

    @v1.post("/chat/completions")
    async def chat_completions(request: Request) -> Response:
        req = protocol.parse(protocol.ChatRequest, await read_json(request, config.max_body_bytes))
        server.check_model(req.model)
        asked, param = req.max_completion_tokens, "max_completion_tokens"
        if asked is None:
            asked, param = req.max_tokens, "max_tokens"
        prompt_of = partial(server.chat_prompt, req)
        return await server.respond(request, req, prompt_of, asked, None, param, chat=True)

    app.include_router(v1)
    return app
