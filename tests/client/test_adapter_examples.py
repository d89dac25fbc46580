"""Issue 20, item 3: the adapter examples (examples/openai_agents_agent.py, examples/langgraph_agent.py)
run as their own processes against a broker set up as `make run` does, with their scripted stand-in
models: the staging read is granted at once, the prod restart waits for a person (approved through
`jitgate requests approve` for one example, denied for the other), and the agent's answer says so."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
from pathlib import Path

import httpx

from broker.embedded_redis import free_port
from tests.client.test_examples import run

ROOT = Path(__file__).resolve().parents[2]


async def test_the_adapter_examples_run_against_a_make_run_broker(tmp_path, redis_url, prefix, redis):
    """The OpenAI Agents SDK example restarts once approved; the LangGraph example reports the denial's reason."""
    for folder in ("policies", "examples"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JITGATE_", "REDIS_URL", "SLACK_", "MICROSOFT_", "OPENAI_"))}
    env.update(REDIS_URL=redis_url, JITGATE_REDIS_PREFIX=prefix, JITGATE_URL=f"http://127.0.0.1:{port}",
               PYTHONPATH=str(ROOT))
    jitgate = [sys.executable, "-m", "broker.cli"]
    code, out = await run(tmp_path, env, *jitgate, "init", "--port", str(port))
    assert code == 0, out
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

        async def start(example: str) -> tuple[asyncio.subprocess.Process, str]:
            agent = await asyncio.create_subprocess_exec(sys.executable, example, "--wait", "60", cwd=tmp_path,
                                                         env=env, stdout=asyncio.subprocess.PIPE,
                                                         stderr=asyncio.subprocess.STDOUT)
            first = (await asyncio.wait_for(agent.stdout.readline(), 60)).decode()
            found = re.search(r"request (\w+) is waiting for 1 approval", first)
            assert found, first + (await agent.stdout.read()).decode()
            return agent, found.group(1)

        agent, rid = await start("examples/openai_agents_agent.py")
        code, out = await run(tmp_path, env, *jitgate, "requests", "approve", rid, "--as", "alice")
        assert code == 0, out
        rest = (await asyncio.wait_for(agent.communicate(), 60))[0].decode()
        assert agent.returncode == 0, rest
        assert "payments-api: memory limit 512Mi (read under" in rest
        assert f"kubectl rollout restart -n payments: done (grant {rid}" in rest

        agent, rid = await start("examples/langgraph_agent.py")
        code, out = await run(tmp_path, env, *jitgate, "requests", "deny", rid, "--as", "bob", "--reason",
                              "change freeze until Monday")
        assert code == 0, out
        rest = (await asyncio.wait_for(agent.communicate(), 60))[0].decode()
        assert agent.returncode == 0, rest
        assert "- read_status: payments-api: CrashLoopBackOff" in rest and "- read_config: payments-api: memory limit" in rest
        assert "- kubectl: Not approved: restart on prod/payments-api was denied by bob: change freeze until Monday." in rest
        code, out = await run(tmp_path, env, *jitgate, "requests", "show", rid)
        assert code == 0 and "denied" in out
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 20)
