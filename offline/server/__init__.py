"""The local Hub server: an offline stand-in that speaks the Hugging Face Hub HTTP API.

It is what the tests and `make demo` point `HF_ENDPOINT` at, so that the real
huggingface_hub, datasets, transformers and peft clients create repos, push commits, branches
and tags, and download files exactly as they would from the Hub, without a network. It is
not a Hub replacement: one process, no web pages but a card view, no pull requests, no Xet storage, and
Spaces are only recorded (variables, hardware), never built or run. See offline/server/README.md.

A Starlette application (`app.py`, one module per resource) served by uvicorn.

    python -m offline serve --dir hub-data --port 8089
"""
from __future__ import annotations

import argparse
import logging
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from offline.server.auth import ensure_token

__all__ = ["ensure_token", "start_in_thread", "add_arguments", "run", "ServerHandle"]

# Idle connections stay open longer than clients keep theirs (httpx: 5 s), so a client never sends
# on a connection the server is closing at that moment.
KEEP_ALIVE_S = 75
STOP_S = 5  # requests still running when the server is asked to stop get this long to finish
START_S = 30


@dataclass
class ServerHandle:
    """A server running in a background thread."""

    url: str
    port: int
    data_dir: Path
    _server: object
    _thread: threading.Thread

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=STOP_S + 5)


def _make_server(data_dir: str | Path, host: str, port: int, faults: bool = False):
    """A uvicorn server for `data_dir` and its socket, already bound and listening (a busy port fails here)."""
    import uvicorn

    from offline.server.app import create_app

    Path(data_dir).mkdir(parents=True, exist_ok=True)
    sock = socket.create_server((host, port))
    config = uvicorn.Config(create_app(Path(data_dir), faults), http="h11", loop="asyncio", ws="none",
                            lifespan="off", log_config=None, log_level="warning", access_log=False,
                            server_header=False, timeout_keep_alive=KEEP_ALIVE_S, timeout_graceful_shutdown=STOP_S)
    return uvicorn.Server(config), sock


def start_in_thread(data_dir: str | Path, host: str = "127.0.0.1", port: int = 0,
                    faults: bool = False) -> ServerHandle:
    """Serve `data_dir` on host:port (0 = any free port) from a daemon thread.

    `faults=True` enables fault injection (`/_local/faults`, reliability tests only): without
    it that endpoint does not exist, whatever token asks.
    """
    server, sock = _make_server(data_dir, host, port, faults)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="local-hub", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_S
    while not server.started:  # connections queue on the listening socket meanwhile
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the local Hub server did not start; its error is logged above")
        time.sleep(0.01)
    bound_port = sock.getsockname()[1]
    return ServerHandle(f"http://{host}:{bound_port}", bound_port, Path(data_dir), server, thread)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", required=True, type=Path, help="folder holding repos, objects and tokens.json")
    parser.add_argument("--port", type=int, default=8089, help="port to listen on (default 8089)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--user", default=None,
                        help="also create a write token for this user in DIR/tokens.json (export it as HF_TOKEN)")
    parser.add_argument("--faults", action="store_true",
                        help="enable fault injection at /_local/faults (reliability tests only; off by default)")


def run(args: argparse.Namespace) -> int:
    from common.errors import EnvironmentProblem

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        server, sock = _make_server(args.dir, args.host, args.port, getattr(args, "faults", False))
    except OSError as exc:
        raise EnvironmentProblem(f"cannot serve on {args.host}:{args.port}: {exc.strerror or exc}") from None
    if args.user:
        ensure_token(args.dir, args.user, "write")  # never printed: tokens stay out of logs
        print(f"write token for {args.user} added to {args.dir / 'tokens.json'}", flush=True)
    host, port = sock.getsockname()[:2]
    print(f"local Hub server on http://{host}:{port} (data in {args.dir}); "
          f"set HF_ENDPOINT=http://{host}:{port} HF_HUB_DISABLE_XET=1", flush=True)
    try:
        server.run(sockets=[sock])  # until SIGINT or SIGTERM; uvicorn lets running requests finish
    except KeyboardInterrupt:
        pass
    return 0
