"""The local Hub server: an offline stand-in that speaks the Hugging Face Hub HTTP API.

It is what the tests and `make demo` point `HF_ENDPOINT` at, so that the real
huggingface_hub, datasets, transformers and peft clients create repos, push commits, branches
and tags, and download files exactly as they would from the Hub, without a network. It is
not a Hub replacement: one process, no web pages but a card view, no pull requests, no Xet storage, and
Spaces are only recorded (variables, hardware), never built or run. See offline/server/README.md.

    python -m offline serve --dir hub-data --port 8089
"""
from __future__ import annotations

import argparse
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from offline.server.auth import ensure_token

__all__ = ["ensure_token", "start_in_thread", "add_arguments", "run", "ServerHandle"]


@dataclass
class ServerHandle:
    """A server running in a background thread."""

    url: str
    port: int
    data_dir: Path
    _server: object
    _thread: threading.Thread

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def _make_server(data_dir: str | Path, host: str, port: int, faults: bool = False):
    from offline.server.app import HubHTTPServer

    Path(data_dir).mkdir(parents=True, exist_ok=True)
    return HubHTTPServer((host, port), data_dir, faults=faults)


def start_in_thread(data_dir: str | Path, host: str = "127.0.0.1", port: int = 0,
                    faults: bool = False) -> ServerHandle:
    """Serve `data_dir` on host:port (0 = any free port) from a daemon thread.

    `faults=True` enables fault injection (`/_local/faults`, reliability tests only): without
    it that endpoint does not exist, whatever token asks.
    """
    server = _make_server(data_dir, host, port, faults)
    thread = threading.Thread(target=server.serve_forever, name="local-hub", daemon=True)
    thread.start()
    bound_port = server.server_address[1]
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
        server = _make_server(args.dir, args.host, args.port, getattr(args, "faults", False))
    except OSError as exc:
        raise EnvironmentProblem(f"cannot serve on {args.host}:{args.port}: {exc.strerror or exc}") from None
    if args.user:
        ensure_token(args.dir, args.user, "write")  # never printed: tokens stay out of logs
        print(f"write token for {args.user} added to {args.dir / 'tokens.json'}", flush=True)
    host, port = server.server_address[:2]
    print(f"local Hub server on http://{host}:{port} (data in {args.dir}); "
          f"set HF_ENDPOINT=http://{host}:{port} HF_HUB_DISABLE_XET=1", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
