"""Errors raised by reel_client."""

from __future__ import annotations

import grpc


class ReelError(grpc.RpcError):
    """A failed reel call: the server's gRPC status code and message.

    It is a ``grpc.RpcError`` (so existing handlers keep working) with the same
    ``code()`` and ``details()`` accessors as the errors grpc raises itself.
    """

    def __init__(self, code: grpc.StatusCode, details: str, method: str = ""):
        self._code = code
        self._details = details or ""
        self.method = method
        super().__init__(str(self))

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def __str__(self) -> str:
        where = f"{self.method}: " if self.method else ""
        return f"{where}{self._code.name}: {self._details}"

    def __repr__(self) -> str:
        return f"ReelError({self._code.name}, {self._details!r})"

    @classmethod
    def from_rpc(
        cls, err: grpc.RpcError, method: str = "", deadline: bool = False
    ) -> "ReelError":
        code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
        details = (err.details() if hasattr(err, "details") else str(err)) or ""
        # tonic (the server's gRPC library) answers an expired grpc-timeout with
        # CANCELLED "Timeout expired", which can reach the client before its own
        # deadline fires; report it as what it is.
        if deadline and code == grpc.StatusCode.CANCELLED and details == "Timeout expired":
            code = grpc.StatusCode.DEADLINE_EXCEEDED
        return cls(code or grpc.StatusCode.UNKNOWN, details, method)
