"""Ray, the optional engine for distributed search and profiling: imported only when asked for."""

from __future__ import annotations

import os
import socket
from types import ModuleType
from typing import Any

from .errors import JdnasError

__all__ = ["INSTALL_HINT", "require_ray", "check_address", "connect", "worker_id"]

INSTALL_HINT = 'pip install -e ".[ray]" (or pip install "ray>=2.9")'


def require_ray(error: type[JdnasError], what: str = "executor='ray'") -> ModuleType:
    """The ``ray`` module, or ``error`` saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise error(f"{what} needs Ray, which is not installed here: {INSTALL_HINT}") from exc
    return ray


def check_address(address: str | None, error: type[JdnasError]) -> None:
    """Refuse, within seconds, a cluster ``address`` nothing accepts a connection at: ``ray.init``
    keeps retrying one for minutes with no error. As ``ray.init`` reads it: ``None`` and ``"auto"``
    take ``RAY_ADDRESS`` where it is set; then ``None`` and ``"local"`` start a Ray here, ``"auto"``
    is the cluster started on this machine (``ray start``). Only that something listens is checked
    (an address that answers but is not Ray is Ray's to report), and schemes other than ``ray://``
    are left to Ray."""
    from_env = os.environ.get("RAY_ADDRESS") if address in (None, "auto") else None
    address = from_env or address
    if address is None or address == "local" or ("://" in address and not address.startswith("ray://")):
        return
    named = f"address {address!r}" + (" (from RAY_ADDRESS)" if from_env else "")
    hostport = address.removeprefix("ray://")
    if address == "auto":
        try:
            from ray._private.services import canonicalize_bootstrap_address
        except ImportError:  # Ray moved it: ray.init says what it finds
            return
        try:
            hostport = canonicalize_bootstrap_address(address) or ""
        except (ConnectionError, ValueError) as exc:
            raise error(f"address 'auto' finds no running Ray cluster on this machine ({exc}); {_START}") from exc
        named = f"address 'auto' ({hostport})"
    host, _, port = hostport.rpartition(":")
    if not host or not (port.isascii() and port.isdigit()):
        raise error(f"{named} is not HOST:PORT, ray://HOST:PORT, auto or local")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=_ANSWER_S).close()
    except (OSError, OverflowError) as exc:
        raise error(f"no Ray cluster answers at {named} ({exc}); {_START}") from exc


_ANSWER_S = 5.0
_START = (
    "start one (ray start --head --port PORT), or leave the address out (and RAY_ADDRESS unset) to start a local "
    "Ray for this run"
)


def connect(
    ray: ModuleType, address: str | None, init: dict[str, Any] | None = None, *, error: type[JdnasError] = JdnasError
) -> bool:
    """Connect to ``address`` (None: an initialised Ray, or a new local one); True when this call
    started the connection (its owner shuts it down). An address nothing answers at is ``error``."""
    if ray.is_initialized():
        return False
    check_address(address, error)
    options = {} if address else {"include_dashboard": False}
    try:
        ray.init(address=address, **{**options, **(init or {})})
    except ConnectionError as exc:  # gone between the check and the connection
        raise error(f"cannot connect to the Ray cluster at {address!r} ({exc}); {_START}") from exc
    return True


def worker_id() -> str:
    """``host:pid`` of this process: names the worker that did a piece of work."""
    return f"{socket.gethostname()}:{os.getpid()}"
