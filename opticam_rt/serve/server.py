"""Running the app on uvicorn: bind, serve, and on SIGTERM drain the requests in flight."""

from __future__ import annotations

import signal
import socket
from typing import Any

from opticam_rt.errors import OpticamError
from opticam_rt.serve.config import ServeConfig
from opticam_rt.serve.logs import event


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one, read back from the socket).

    Made with ``proto=IPPROTO_TCP``: asyncio sets TCP_NODELAY only on connections of such a
    socket, and without it every keep-alive response (headers and body written apart) waited
    for the client's delayed ACK, 40-50 ms a request whatever the work.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OpticamError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def uvicorn_server(app: Any, config: ServeConfig, log_level: str = "info") -> Any:
    """A uvicorn Server for ``app``: our JSON access log instead of uvicorn's, and a graceful
    shutdown bounded by the request timeout (a request in flight finishes, none hangs it)."""
    import uvicorn

    return uvicorn.Server(uvicorn.Config(
        app,
        lifespan="on",
        access_log=False,
        log_config=None,
        log_level=log_level,
        timeout_graceful_shutdown=int(config.request_timeout_s) + 5,
        timeout_keep_alive=5,
    ))


def serve(config: ServeConfig, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> int:
    """Serve until SIGTERM or SIGINT; -> 0 after a SIGTERM drained the requests in flight.

    uvicorn handles both signals (stop accepting, finish the requests in flight, run the app's
    shutdown) and then re-raises the signal under the handler it found: ours records SIGTERM,
    so the process exits 0 instead of dying by the signal. SIGINT keeps its default (Ctrl-C).
    """
    from opticam_rt.serve.app import create_app

    app = create_app(config)
    sock = bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    terminated: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: terminated.append(signum))
    try:
        event("listening", host=bound_host, port=bound_port, url=f"http://{bound_host}:{bound_port}")
        server = uvicorn_server(app, config, log_level)
        server.run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)
        sock.close()
    if not server.started:
        raise OpticamError("the server did not start (see the log above)")
    event("exiting", signal="SIGTERM" if terminated else None)
    return 0
