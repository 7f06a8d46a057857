"""The gateway's errors, decoded from the ``grpc-status-details-bin`` trailer."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from tributary.types import Position
from tributary.v1 import gateway_pb2

__all__ = ["TributaryError", "from_rpc_error", "from_status"]

_KIND_NAMES = {
    gateway_pb2.OffsetsDetail.EARLIEST: "EARLIEST",
    gateway_pb2.OffsetsDetail.RESUME: "RESUME",
    gateway_pb2.OffsetsDetail.LATEST: "LATEST",
}


class TributaryError(Exception):
    """A failed call, with everything the gateway said about it.

    - ``code``: the ``grpc.StatusCode``; ``message``: what to fix.
    - ``reason``, ``domain``, ``metadata``: from ``google.rpc.ErrorInfo`` (e.g. ``OFFSET_TOO_OLD``,
      ``tributary.v1``, ``{"translator": ...}``); empty when the status had none.
    - ``field_violations``: ``(field, description)`` pairs from ``google.rpc.BadRequest``.
    - ``offsets_kind`` (``"EARLIEST"``, ``"RESUME"`` or ``"LATEST"``) and ``offsets``: from
      ``tributary.v1.OffsetsDetail``; ``None`` when the status had none.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str = "",
        domain: str = "",
        metadata: Optional[Dict[str, str]] = None,
        field_violations: Optional[List[Tuple[str, str]]] = None,
        offsets_kind: Optional[str] = None,
        offsets: Optional[Position] = None,
    ) -> None:
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata: Dict[str, str] = dict(metadata or {})
        self.field_violations: List[Tuple[str, str]] = list(field_violations or [])
        self.offsets_kind = offsets_kind
        self.offsets = offsets
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.code.name}: {self.message}"
        if self.reason:
            text += f" [{self.reason}]"
        for field, description in self.field_violations:
            text += f" (field {field}: {description})"
        if self.offsets_kind is not None:
            text += f" ({self.offsets_kind} offsets {self.offsets!r})"
        return text

    def __repr__(self) -> str:
        return f"TributaryError({str(self)!r})"


def from_status(code: grpc.StatusCode, message: str, status: Optional[status_pb2.Status]) -> TributaryError:
    """A ``TributaryError`` from a code, a message and the decoded ``google.rpc.Status`` (if any).

    Details of unknown types are ignored.
    """
    error = TributaryError(code, message)
    if status is None:
        return error
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            error.reason, error.domain, error.metadata = info.reason, info.domain, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            error.field_violations.extend((v.field, v.description) for v in bad.field_violations)
        elif detail.Is(gateway_pb2.OffsetsDetail.DESCRIPTOR):
            offsets = gateway_pb2.OffsetsDetail()
            detail.Unpack(offsets)
            error.offsets_kind = _KIND_NAMES.get(offsets.kind)
            error.offsets = Position.from_offsets(offsets.offsets)
    error.args = (str(error),)
    return error


def from_rpc_error(error: grpc.RpcError) -> TributaryError:
    """Decodes a failed call: its code, message and ``grpc-status-details-bin`` trailer.

    A trailer that does not parse, or whose code or message disagrees with the call's, is ignored
    (the code and message are kept).
    """
    code = _call_attr(error, "code", grpc.StatusCode.UNKNOWN)
    message = _call_attr(error, "details", "") or ""
    status: Optional[status_pb2.Status] = None
    if isinstance(error, grpc.Call):
        try:
            status = rpc_status.from_call(error)
        except Exception:  # damaged or inconsistent details: keep code and message
            status = None
    return from_status(code, message, status)


def _call_attr(error: grpc.RpcError, name: str, default: Any) -> Any:
    attr = getattr(error, name, None)
    if attr is None:
        return default
    try:
        value = attr()
    except Exception:
        return default
    return default if value is None else value
