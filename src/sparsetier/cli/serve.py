"""`sparsetier serve`: the OpenAI-compatible HTTP server (FastAPI on uvicorn)."""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys

from ..errors import SparsetierError
from ..weights import catalog
from .generate import add_engine_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="OpenAI-compatible HTTP server (/v1/completions, /v1/chat/completions)")
    p.add_argument("model", nargs="?", help="catalog name, .gguf path or Hugging Face folder")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1: this host only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument(
        "--api-key",
        default=None,
        help="require 'Authorization: Bearer KEY' on /v1 routes (default: $SPARSETIER_API_KEY; "
        "prefer the variable: arguments are visible to other users in ps)",
    )
    p.add_argument(
        "--parallel",
        "-np",
        type=int,
        default=4,
        help="sequences decoded together, each with its own KV-cache slot (default 4)",
    )
    p.add_argument(
        "--max-queue",
        type=int,
        default=64,
        help="requests that may wait for a slot; more get 429 (default 64)",
    )
    p.add_argument(
        "--prefill-chunk",
        type=int,
        default=256,
        help="prompt tokens per step: a new prompt stalls running streams at most this much (default 256)",
    )
    p.add_argument("--max-body-bytes", type=int, default=4 << 20, help="largest request body (default 4 MiB)")
    p.add_argument("--served-model-name", default=None, help="model id clients send (default: from MODEL)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    add_engine_args(p)
    p.set_defaults(func=cmd_serve)


def model_ids(model: str | None, served_name: str | None) -> tuple[str, tuple[str, ...]]:
    """The id /v1/models lists, and other names requests may use for it."""
    given = model or catalog.DEFAULT_MODEL
    base = os.path.basename(os.path.normpath(given))
    stem = base[: -len(".gguf")] if base.endswith(".gguf") else base
    name = served_name or (given if given in catalog.MODELS else stem)
    aliases = tuple(dict.fromkeys(a for a in (given, base, stem) if a != name))
    return name, aliases


def bind(host: str, port: int) -> socket.socket:
    """Bind here rather than in uvicorn, so a bad address is one clear error line."""
    if not 0 <= port <= 65535:
        raise SparsetierError(f"--port must be in 0..65535, got {port}")
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as e:
        raise SparsetierError(f"cannot resolve --host {host!r}: {e.strerror}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise SparsetierError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    return sock


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from ..engine import Engine
    from ..server.app import ServerConfig, create_app

    limits = [
        ("--parallel", args.parallel, 1),
        ("--max-queue", args.max_queue, 0),
        ("--prefill-chunk", args.prefill_chunk, 1),
        ("--max-body-bytes", args.max_body_bytes, 1),
        ("--ctx-size", args.ctx_size, 16),
    ]
    for flag, value, least in limits:
        if value < least:
            raise SparsetierError(f"{flag} must be >= {least}, got {value}")
    api_key = args.api_key or os.environ.get("SPARSETIER_API_KEY") or None
    sock = bind(args.host, args.port)
    if not _is_loopback(args.host) and not api_key:
        print(
            f"sparsetier: warning: listening on {args.host} with no API key: anyone who can reach this "
            "port can use the model (set SPARSETIER_API_KEY)",
            file=sys.stderr,
        )
    engine = Engine.load(
        args.model,
        threads=args.threads,
        ctx_size=args.ctx_size,
        n_slots=args.parallel,
        memory_budget=args.memory_budget,
    )
    if engine.tiers is not None:
        print(f"sparsetier: {engine.tiers.summary()}", file=sys.stderr, flush=True)
    name, aliases = model_ids(args.model, args.served_model_name)
    config = ServerConfig(
        model_name=name,
        aliases=aliases,
        api_key=api_key,
        max_queue=args.max_queue,
        prefill_chunk=args.prefill_chunk,
        max_body_bytes=args.max_body_bytes,
    )
    app = create_app(engine, config)
    host, port = sock.getsockname()[:2]
    print(
        f"sparsetier: serving '{name}' on http://{host}:{port}/v1 ({args.parallel} slots of "
        f"{engine.ctx_size} tokens, queue {args.max_queue})",
        file=sys.stderr,
        flush=True,
    )
    # uvicorn's own cap on open connections (503 beyond it), well above what the queue admits
    limit = 4 * (args.parallel + args.max_queue) + 16
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level=args.log_level,
            limit_concurrency=limit,
            timeout_keep_alive=5,
            timeout_graceful_shutdown=5,
        )
    )
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its graceful shutdown: a clean stop
        pass
    return 0
