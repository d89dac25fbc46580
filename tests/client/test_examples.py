"""The examples run against a broker set up as `make run` does (`jitgate init`, example
policies and targets, `jitgate serve`), each as its own process."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
from pathlib import Path

import httpx

from broker.embedded_redis import free_port

ROOT = Path(__file__).resolve().parents[2]


async def run(cwd: Path, env: dict, *args: str, timeout: float = 60) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(*args, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode()


async def test_examples_run_against_a_make_run_broker(tmp_path, redis_url, prefix, redis):
    """restart_agent (approved by a person), delegation, and both resource servers work end to end."""
    for folder in ("policies", "examples"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JITGATE_", "REDIS_URL", "SLACK_", "MICROSOFT_"))}
    env.update(REDIS_URL=redis_url, JITGATE_REDIS_PREFIX=prefix, JITGATE_URL=f"http://127.0.0.1:{port}",
               PYTHONPATH=str(ROOT))
    jitgate = [sys.executable, "-m", "broker.cli"]
    code, out = await run(tmp_path, env, *jitgate, "init", "--port", str(port))
    assert code == 0, out
    code, out = await run(tmp_path, env, sys.executable, "examples/setup_agents.py")
    assert code == 0 and "example-orchestrator: registered" in out, out
    server = await asyncio.create_subprocess_exec(*jitgate, "serve", cwd=tmp_path, env=env,
                                                  stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(300):
                try:
                    if (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)

        code, out = await run(tmp_path, env, sys.executable, "examples/delegation.py")
        assert code == 0, out
        assert '"act": {"sub": "example-orchestrator"}' in out and "outside the delegated actions" in out

        code, out = await run(tmp_path, env, sys.executable, "examples/resource_server_offline.py", "--port", str(free_port()))
        assert code == 0, out
        assert "fresh proof: 200" in out and "replay):   401" in out and "without a proof:        401" in out

        code, out = await run(tmp_path, env, sys.executable, "examples/resource_server_introspect.py",
                              "--port", str(free_port()))
        assert code == 0, out
        assert "active:   200" in out and "without a proof:   401" in out and "proof is required" in out
        assert "completed:   401" in out and "not active" in out

        agent = await asyncio.create_subprocess_exec(sys.executable, "examples/restart_agent.py", cwd=tmp_path, env=env,
                                                     stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        first = (await asyncio.wait_for(agent.stdout.readline(), 30)).decode()
        rid = re.search(r"request (\w+) is waiting for 1 approval", first).group(1)
        code, out = await run(tmp_path, env, *jitgate, "requests", "approve", rid, "--as", "alice")
        assert code == 0, out
        rest, _ = await asyncio.wait_for(agent.communicate(), 30)
        assert agent.returncode == 0 and "restarted; reporting completion" in rest.decode()
        code, out = await run(tmp_path, env, *jitgate, "requests", "show", rid)
        assert code == 0 and "completed" in out
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 20)
