"""Store scripts: what a transition hands back."""

from __future__ import annotations

from broker.audit import event
from broker.store import Store


async def test_a_transition_returns_the_request_only_when_asked_or_refused(redis, line, prefix):
    """want_request=False: a made change comes back without the hash (nobody reads it); a
    refused one still carries the request, so the caller can say why."""
    store = Store(redis, line, prefix)
    at = "2026-01-01T00:00:00.000Z"
    for rid in ("Req00000001", "Req00000002"):
        assert (await store.create(rid, {"id": rid, "agent": "a"}, "approved", [event("t.seed", at, rid)],
                                   None, None, 0)).ok
    kept = await store.transition("Req00000001", ["approved"], "active", {}, [event("t.go", at, "Req00000001")], 0)
    assert kept.ok and kept.fields[b"status"] == b"active"
    bare = await store.transition("Req00000002", ["approved"], "active", {}, [event("t.go", at, "Req00000002")], 0,
                                  want_request=False)
    assert bare.ok and bare.status == "active" and bare.fields is None
    refused = await store.transition("Req00000002", ["approved"], "completed", {}, [], 0, want_request=False)
    assert refused.result == "conflict" and refused.fields[b"status"] == b"active"


def test_the_state_machines_reach_redis_only_through_named_store_methods():
    """Issue 15: "`Lifecycle` and `BreakGlass` stop calling `store.redis` directly": every Redis
    command they make is a Store method that says what it promises. (``BreakGlass.deliver``
    is left out: it moves to the notice fan-out, the next slice of the same issue.)"""
    import ast  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    root = Path(__file__).resolve().parents[2] / "broker"
    found = []
    for name in ("lifecycle.py", "breakglass.py"):
        tree = ast.parse((root / name).read_text(encoding="utf-8"))
        skip = {id(n) for f in ast.walk(tree) if isinstance(f, ast.AsyncFunctionDef) and f.name == "deliver"
                and name == "breakglass.py" for n in ast.walk(f)}
        found += [f"broker/{name}:{n.lineno}" for n in ast.walk(tree)
                  if isinstance(n, ast.Attribute) and n.attr == "redis" and id(n) not in skip
                  and isinstance(n.value, ast.Attribute) and n.value.attr == "store"]
    assert found == []
