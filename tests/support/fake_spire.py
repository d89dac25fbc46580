"""A stand-in for a SPIRE agent's SPIFFE Workload API: a real gRPC server on a unix socket.

It serves ``FetchJWTSVID`` the way the Workload API specifies: the call must carry the
``workload.spiffe.io: true`` metadata (else ``InvalidArgument``, as SPIRE answers), the
audience must not be empty, and the answer is a JWT-SVID for the workload's SPIFFE id,
signed by a key of the trust bundle, with exactly the audience asked for. It records
every request (audience, metadata) so a test can see what crossed the wire. The service
definition is the one the ``spiffe`` package ships (its generated protobuf stubs).
"""

from __future__ import annotations

import time
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import jwt
from spiffe._proto import workload_pb2, workload_pb2_grpc


@dataclass
class FetchCall:
    audience: list[str]
    metadata: dict[str, str]


@dataclass
class FakeWorkloadApi(workload_pb2_grpc.SpiffeWorkloadAPIServicer):
    """``FakeWorkloadApi(socket, spiffe_id, key, kid)``; ``start()`` / ``stop()``; ``.calls``."""

    socket: Path
    spiffe_id: str
    key: Any
    kid: str
    ttl_s: int = 300
    registered: bool = True  # False: this workload has no registration entry (SPIRE: PermissionDenied)
    calls: list[FetchCall] = field(default_factory=list)
    _server: Any = None

    @property
    def endpoint(self) -> str:
        """The socket address as ``SPIFFE_ENDPOINT_SOCKET`` takes it."""
        return f"unix://{self.socket}"

    def FetchJWTSVID(self, request: workload_pb2.JWTSVIDRequest, context: grpc.ServicerContext):  # noqa: N802 - gRPC name
        metadata = {k: v for k, v in context.invocation_metadata()}
        self.calls.append(FetchCall(list(request.audience), metadata))
        if metadata.get("workload.spiffe.io") != "true":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "security header missing from request")
        if not request.audience:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "audience must be specified")
        if not self.registered:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "no identity issued")
        now = int(time.time())
        token = jwt.encode({"sub": self.spiffe_id, "aud": list(request.audience), "iat": now, "exp": now + self.ttl_s},
                           self.key, algorithm="ES256", headers={"kid": self.kid, "typ": "JWT"})
        return workload_pb2.JWTSVIDResponse(svids=[workload_pb2.JWTSVID(spiffe_id=self.spiffe_id, svid=token)])

    def start(self) -> "FakeWorkloadApi":
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        workload_pb2_grpc.add_SpiffeWorkloadAPIServicer_to_server(self, self._server)
        if not self._server.add_insecure_port(f"unix:{self.socket}"):
            raise RuntimeError(f"cannot listen on {self.socket}")
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait(5)
