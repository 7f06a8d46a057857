"""The connection to a gateway: a channel with TLS and a bearer token, and the generated stubs."""

from __future__ import annotations

import hashlib
import os
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple, Union

import grpc

from tributary.errors import from_rpc_error
from tributary.v1 import (
    gateway_pb2_grpc,
    subscriptions_pb2_grpc,
    translators_pb2,
    translators_pb2_grpc,
)

__all__ = ["Client"]

#: Size of one upload message's bytes.
UPLOAD_CHUNK_BYTES = 1 << 20

_DEFAULT_OPTIONS: List[Tuple[str, Any]] = [
    # A record above the server's chunk or batch bounds goes alone: accept large messages.
    ("grpc.max_receive_message_length", 256 << 20),
    # Reconnect quickly after a gateway restart; the follower adds its own backoff on top.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 5000),
    ("grpc.keepalive_time_ms", 30000),
    ("grpc.keepalive_timeout_ms", 10000),
    ("grpc.keepalive_permit_without_calls", 0),
]


class Client:
    """A connection to a Tributary gateway.

    ``target`` is ``host:port`` (an ``http://`` or ``https://`` prefix is accepted; ``https://``
    turns TLS on with the system's roots). TLS is on when ``root_certificates`` (PEM bytes of the
    CAs to trust) or ``certificate_chain`` is given, or when ``tls=True``; ``certificate_chain`` and
    ``private_key`` (PEM bytes) present a client certificate (mutual TLS); ``server_name``
    overrides the name the server's certificate is checked against. ``token`` is sent as
    ``authorization: Bearer <token>`` on every call. ``options`` are extra gRPC channel options.

    ``gateway``, ``translators`` and ``subscriptions`` are the generated stubs of the three
    services. Use it as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        target: str,
        token: Optional[str] = None,
        root_certificates: Optional[bytes] = None,
        certificate_chain: Optional[bytes] = None,
        private_key: Optional[bytes] = None,
        server_name: Optional[str] = None,
        *,
        tls: Optional[bool] = None,
        options: Sequence[Tuple[str, Any]] = (),
    ) -> None:
        if target.startswith("https://"):
            target = target[len("https://") :]
            tls = True if tls is None else tls
        elif target.startswith("http://"):
            target = target[len("http://") :]
        target = target.rstrip("/")
        if tls is None:
            tls = root_certificates is not None or certificate_chain is not None
        if (certificate_chain is None) != (private_key is None):
            raise ValueError("give both certificate_chain and private_key, or neither")
        if not tls and (root_certificates or certificate_chain or server_name):
            raise ValueError("root_certificates, certificate_chain and server_name need TLS")
        channel_options = dict(_DEFAULT_OPTIONS)
        channel_options.update(dict(options))
        if server_name:
            channel_options["grpc.ssl_target_name_override"] = server_name
        opts = list(channel_options.items())
        if tls:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=root_certificates,
                private_key=private_key,
                certificate_chain=certificate_chain,
            )
            channel = grpc.secure_channel(target, credentials, options=opts)
        else:
            channel = grpc.insecure_channel(target, options=opts)
        self.target = target
        self._raw_channel = channel
        if token:
            channel = grpc.intercept_channel(channel, _BearerToken(token))
        self.channel: grpc.Channel = channel
        self.gateway = gateway_pb2_grpc.GatewayStub(channel)
        self.translators = translators_pb2_grpc.TranslatorsStub(channel)
        self.subscriptions = subscriptions_pb2_grpc.SubscriptionsStub(channel)

    def upload_translator(
        self,
        name: str,
        component: Union[bytes, bytearray, memoryview, str, "os.PathLike[str]"],
        timeout: Optional[float] = None,
    ) -> translators_pb2.TranslatorVersion:
        """Uploads a translator component (a path to a ``.wasm`` file, or its bytes) under ``name``.

        The header carries the size and SHA-256, so the gateway checks that every byte arrived;
        the bytes follow in 1 MiB messages. Returns the stored version (``digest`` pins it).
        Raises ``TributaryError`` on failure.
        """
        if isinstance(component, (bytes, bytearray, memoryview)):
            data = bytes(component)
        else:
            with open(component, "rb") as f:
                data = f.read()
        header = translators_pb2.UploadHeader(
            name=name, size=len(data), sha256=hashlib.sha256(data).hexdigest()
        )

        def requests() -> Iterator[translators_pb2.UploadTranslatorRequest]:
            yield translators_pb2.UploadTranslatorRequest(header=header)
            for start in range(0, len(data), UPLOAD_CHUNK_BYTES):
                yield translators_pb2.UploadTranslatorRequest(
                    chunk=data[start : start + UPLOAD_CHUNK_BYTES]
                )

        try:
            version: translators_pb2.TranslatorVersion = self.translators.Upload(
                requests(), timeout=timeout
            )
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        return version

    def close(self) -> None:
        """Closes the channel; calls in flight end ``CANCELLED``."""
        self._raw_channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _ClientCallDetails(grpc.ClientCallDetails):
    def __init__(self, base: grpc.ClientCallDetails, metadata: Tuple[Tuple[str, Union[str, bytes]], ...]) -> None:
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = metadata
        self.credentials = base.credentials
        self.wait_for_ready = getattr(base, "wait_for_ready", None)
        self.compression = getattr(base, "compression", None)


class _BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds ``authorization: Bearer <token>`` to every call."""

    def __init__(self, token: str) -> None:
        self._header: Tuple[str, Union[str, bytes]] = ("authorization", f"Bearer {token}")

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = tuple(m for m in (details.metadata or ()) if m[0].lower() != "authorization")
        return _ClientCallDetails(details, metadata + (self._header,))

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, requests: Any) -> Any:
        return continuation(self._details(details), requests)
