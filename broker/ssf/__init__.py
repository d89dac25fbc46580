"""The broker as an OpenID Shared Signals Framework 1.0 transmitter (docs/ssf.md).

When a grant whose token is still live ends early, the transition script that ended it
queues ``(request, jti, aud, ...)`` on ``<outbox>:ssf`` (``grant_ended`` in
``broker/lua/audit.lua``). :class:`Transmitter` turns each entry into a CAEP 1.0
``session-revoked`` Security Event Token (RFC 8417) for every stream of a resource server the
token was meant for, and delivers it by push (RFC 8935) or holds it for polling (RFC 8936).

- ``events.py``: the SETs (claims, subject identifiers, signing) and the transmitter metadata.
- ``streams.py``: stream configurations and their queues in Redis (the management API's logic).
- ``transmitter.py``: the fan-out (one consumer group) and push delivery (back-off, at least once).
- ``routes.py``: the HTTP endpoints; parsing and authentication only.
"""

from .events import (
    CAEP_SESSION_REVOKED,
    DELIVERY_POLL,
    DELIVERY_PUSH,
    SSF_STREAM_UPDATED,
    SSF_VERIFICATION,
    transmitter_metadata,
)
from .streams import Streams
from .transmitter import Transmitter

__all__ = [
    "CAEP_SESSION_REVOKED", "DELIVERY_POLL", "DELIVERY_PUSH", "SSF_STREAM_UPDATED", "SSF_VERIFICATION",
    "Streams", "Transmitter", "transmitter_metadata",
]
