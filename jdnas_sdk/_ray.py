"""Ray, the optional engine for distributed search and profiling: imported only when asked for."""

from __future__ import annotations

import os
import socket
from types import ModuleType
from typing import Any

from .errors import JdnasError

__all__ = ["INSTALL_HINT", "require_ray", "connect", "worker_id"]

INSTALL_HINT = 'pip install -e ".[ray]" (or pip install "ray>=2.9")'


def require_ray(error: type[JdnasError], what: str = "executor='ray'") -> ModuleType:
    """The ``ray`` module, or ``error`` saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise error(f"{what} needs Ray, which is not installed here: {INSTALL_HINT}") from exc
    return ray


def connect(ray: ModuleType, address: str | None, init: dict[str, Any] | None = None) -> bool:
    """Connect to ``address`` (None: an initialised Ray, or a new local one); True when this call
    started the connection (its owner shuts it down)."""
    if ray.is_initialized():
        return False
    options = {} if address else {"include_dashboard": False}
    ray.init(address=address, **{**options, **(init or {})})
    return True


def worker_id() -> str:
    """``host:pid`` of this process: names the worker that did a piece of work."""
    return f"{socket.gethostname()}:{os.getpid()}"
