"""Request bodies read with a size cap, for every HTTP surface (the agent API, the token
endpoints, the console's forms): nothing is read past ``limit`` bytes, and a body that is not
what the route takes is refused with an :class:`~broker.errors.InvalidRequest`, never a 500."""

from __future__ import annotations

from urllib.parse import parse_qs

import orjson
from starlette.requests import Request as HttpRequest

from .errors import InvalidRequest, PayloadTooLarge


async def read_body(request: HttpRequest, limit: int) -> bytes:
    """The raw body, refusing anything over ``limit`` bytes before reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise PayloadTooLarge(f"the body is larger than {limit} bytes")
        except ValueError:
            raise InvalidRequest("malformed Content-Length") from None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: HttpRequest, limit: int):
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise InvalidRequest("send the body as application/json")
    raw = await read_body(request, limit)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise InvalidRequest(f"the body is not valid JSON: {e.msg} at position {e.pos}") from None


async def read_form(request: HttpRequest, limit: int) -> dict[str, str]:
    """RFC 7662/7009 bodies are form-encoded; JSON is accepted too."""
    raw = await read_body(request, limit)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise InvalidRequest("the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise InvalidRequest("the body must be a JSON object")
        return {k: v for k, v in body.items() if isinstance(v, str)}
    if ctype != "application/x-www-form-urlencoded":
        raise InvalidRequest("send the body as application/x-www-form-urlencoded")
    try:
        parsed = parse_qs(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise InvalidRequest("the body is not UTF-8") from None
    return {k: v[0] for k, v in parsed.items()}
