"""Issue 20, item 3: the adapters import their framework lazily, so the client (and the
adapters' modules themselves) import in an environment without openai-agents or LangGraph."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# None in sys.modules makes `import X` raise ImportError: the frameworks are "not installed".
SCRIPT = """
import sys
for name in ("agents", "langgraph", "langchain_core", "openai"):
    sys.modules[name] = None
import broker.client
from broker.client.adapters import current_token
from broker.client.adapters.openai_agents import jitgate_tool
from broker.client.adapters.langgraph import jitgate_tool_calls, jitgate_tool_node
calls = jitgate_tool_calls(lambda: None, {"t": {"action": "read", "target": "staging/x"}})
try:
    jitgate_tool(object(), client=lambda: None, action="read", target="staging/x")
except ImportError:
    pass
else:
    raise AssertionError("gating a tool needs the SDK")
try:
    jitgate_tool_node([], lambda: None, {})
except ImportError:
    pass
else:
    raise AssertionError("a ToolNode needs LangGraph")
assert not [m for m in ("agents", "langgraph", "langchain_core") if sys.modules.get(m) is not None]
print("ok")
"""


def test_the_client_and_the_adapter_modules_import_without_the_frameworks():
    """Importing broker.client and both adapter modules needs neither framework; using one needs it."""
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
