"""Structured logs: one JSON object per line (access log and server events) on stderr."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

ACCESS = logging.getLogger("opticam_rt.serve.access")
EVENTS = logging.getLogger("opticam_rt.serve")


class JsonFormatter(logging.Formatter):
    """``{"ts": ..., "level": ..., "logger": ..., "msg": ..., **extra fields}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(getattr(record, "fields", {}))
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            out["exc"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        return json.dumps(out, default=str)


def configure(level: str = "info") -> None:
    """Send the server's loggers (and uvicorn's) to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("opticam_rt.serve", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False


def event(msg: str, level: int = logging.INFO, **fields: Any) -> None:
    EVENTS.log(level, msg, extra={"fields": fields})


class AccessLog:
    """ASGI middleware writing one access record per HTTP request: method, path, status, bytes
    sent, duration (ms), client, and the request's ``model`` when it named one."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        seen = {"status": 0, "bytes": 0}

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
            elif message["type"] == "http.response.body":
                seen["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            client = scope.get("client")
            ACCESS.info(
                "access",
                extra={"fields": {
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": seen["status"],
                    "bytes": seen["bytes"],
                    "ms": round(1000 * (time.perf_counter() - start), 2),
                    "client": f"{client[0]}:{client[1]}" if client else None,
                    **scope.get("state", {}).get("log_fields", {}),
                }},
            )
