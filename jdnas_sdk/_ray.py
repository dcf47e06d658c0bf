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


def check_address(address: str | None, error: type[JdnasError], *, tls: bool = False) -> None:
    """Refuse, within seconds, a cluster ``address`` where no Ray answers: ``ray.init`` keeps
    retrying one for minutes with no error. As ``ray.init`` reads it: ``None`` and ``"auto"``
    take ``RAY_ADDRESS`` where it is set; then ``None`` and ``"local"`` start a Ray here, ``"auto"``
    is the cluster started on this machine (``ray start``). What answers must speak gRPC, as Ray's
    GCS and Ray Client servers do (:func:`_speaks_grpc`): a listener that is something else (a web
    server, SSH, a port that accepts and stays silent) left ``ray.init`` retrying for minutes too.
    Over TLS (``tls``: Ray Client ``_credentials``, or ``RAY_USE_TLS`` set in this process) only
    that something listens is checked. Schemes other than ``ray://`` are left to Ray."""
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
        connection = socket.create_connection((host.strip("[]"), int(port)), timeout=_ANSWER_S)
    except (OSError, OverflowError) as exc:
        raise error(f"no Ray cluster answers at {named} ({exc}); {_START}") from exc
    with connection:
        answer = None if tls or _tls_here() else _speaks_grpc(connection)
    if answer is not None:
        raise error(
            f"something accepts connections at {named}, but it is not a Ray cluster: {answer} (Ray's GCS and "
            "Ray Client speak gRPC). Check the host and port (`ray start --head` prints HEAD_IP:6379; Ray Client "
            "listens on ray://HEAD_IP:10001); a cluster whose gRPC runs over TLS needs RAY_USE_TLS=1 and its "
            f"RAY_TLS_* files set in this process too; or {_START}"
        )


def _tls_here() -> bool:
    """Whether this process speaks to Ray over TLS (``RAY_USE_TLS``, as Ray reads it)."""
    return os.environ.get("RAY_USE_TLS", "0").strip().lower() in ("1", "true")


_HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
"""The HTTP/2 client preface and an empty SETTINGS frame: a gRPC server answers with a SETTINGS frame."""


def _speaks_grpc(connection: socket.socket) -> str | None:
    """``None`` where ``connection``'s peer answers the HTTP/2 greeting as a gRPC server does (its
    first frame is a SETTINGS frame on stream 0), else what it did instead."""
    head = b""
    try:
        connection.sendall(_HTTP2_HELLO)
        while len(head) < 9:
            chunk = connection.recv(9 - len(head))
            if not chunk:
                break
            head += chunk
    except TimeoutError:
        return f"it did not answer an HTTP/2 greeting within {_ANSWER_S:g} s"
    except OSError as exc:
        return f"it dropped the connection on an HTTP/2 greeting ({exc})"
    if len(head) == 9 and head[3] == 4 and int.from_bytes(head[5:9], "big") & 0x7FFFFFFF == 0:
        return None
    return f"it answered an HTTP/2 greeting with {head!r}" if head else "it closed the connection on an HTTP/2 greeting"


_ANSWER_S = 5.0
_START = (
    "start one (ray start --head --port PORT), or leave the address out (and RAY_ADDRESS unset) to start a local "
    "Ray for this run"
)


def connect(
    ray: ModuleType, address: str | None, init: dict[str, Any] | None = None, *, error: type[JdnasError] = JdnasError
) -> bool:
    """Connect to ``address`` (None: an initialised Ray, or a new local one); True when this call
    started the connection (its owner shuts it down). An address where no Ray answers is ``error``
    (:func:`check_address`)."""
    if ray.is_initialized():
        return False
    check_address(address, error, tls="_credentials" in (init or {}))
    options = {} if address else {"include_dashboard": False}
    try:
        ray.init(address=address, **{**options, **(init or {})})
    except ConnectionError as exc:  # gone between the check and the connection
        raise error(f"cannot connect to the Ray cluster at {address!r} ({exc}); {_START}") from exc
    return True


def worker_id() -> str:
    """``host:pid`` of this process: names the worker that did a piece of work."""
    return f"{socket.gethostname()}:{os.getpid()}"
