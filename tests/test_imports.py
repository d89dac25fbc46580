"""The import rules of issue 15, checked over the source (AST, nothing imported): "no desk
importing a private name of the core or the agent API module, and the platforms never importing
each other (a small AST test over the package keeps this true)"."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLATFORMS = ("bot.slack", "bot.teams")
PLATFORM_SDKS = ("slack_bolt", "slack_sdk", "botbuilder", "botframework", "msrest", "msal")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, absolute module, names taken from it) of every import in ``path``, relative ones
    resolved against the file's package."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, a.name, []) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            out.append((node.lineno, base, [a.name for a in node.names]))
    return out


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _violations(folder: str) -> list[str]:
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        where = _module_name(path)
        for line, module, names in _imports(path):
            at = f"{path.relative_to(ROOT)}:{line}"
            if _within(module, "broker"):
                private = [n for n in [*module.split(".")[1:], *names] if n.startswith("_") and not n.startswith("__")]
                if private:
                    found.append(f"{at} imports the private {', '.join(private)} from {module}")
                if _within(module, "broker.api") or (module == "broker" and "api" in names):
                    found.append(f"{at} imports the agent API module (broker.api)")
            if _within(where, "bot.kit"):
                sdk = [s for s in PLATFORM_SDKS if _within(module, s)]
                desk = [p for p in PLATFORMS if _within(module, p) or (module == "bot" and p.split(".")[1] in names)]
                if sdk or desk:
                    found.append(f"{at}: bot.kit imports {(sdk + desk)[0]}")
            for mine in PLATFORMS:
                for other in PLATFORMS:
                    if mine != other and _within(where, mine) and (
                            _within(module, other) or (module == "bot" and other.split(".")[1] in names)):
                        found.append(f"{at}: {mine} imports {other}")
    return found


def test_desks_import_no_private_name_of_the_core_nor_the_agent_api():
    """Issue 15: no desk imports a private name of the core or the agent API module."""
    assert _violations("bot") == []


def test_slack_and_teams_never_import_each_other():
    """Issue 15: the platforms never import each other."""
    assert not [v for v in _violations("bot") if "bot.slack imports" in v or "bot.teams imports" in v]


def test_the_desk_kit_imports_no_platform():
    """Issue 15: "bot/kit/ (no platform SDK imported)": neither a chat SDK nor a desk (bot.slack, bot.teams)."""
    assert (ROOT / "bot" / "kit").is_dir()
    assert not [v for v in _violations("bot") if "bot.kit imports" in v]


def test_the_checker_sees_what_it_forbids(tmp_path, monkeypatch):
    """The checks above can fail: a desk module with each forbidden import is reported, line by line."""
    pkg = tmp_path / "bot" / "teams"
    pkg.mkdir(parents=True)
    (tmp_path / "bot" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "bad.py").write_text(
        "from broker.cli import _settings\n"
        "from broker.api import read_form\n"
        "from ..slack import blocks\n"
        "import bot.slack.desk\n"
        "from broker.config import load_settings\n"
        "from .cards import card\n")
    kit = tmp_path / "bot" / "kit"
    kit.mkdir()
    (kit / "__init__.py").write_text("")
    (kit / "bad.py").write_text(
        "from slack_sdk.errors import SlackApiError\n"
        "import botbuilder.schema\n"
        "from bot.teams import cards\n"
        "from bot import slack\n"
        "from ..slack.text import escape\n"
        "from broker.errors import Conflict\n"
        "from . import once\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert _violations("bot") == [
        "bot/kit/bad.py:1: bot.kit imports slack_sdk",
        "bot/kit/bad.py:2: bot.kit imports botbuilder",
        "bot/kit/bad.py:3: bot.kit imports bot.teams",
        "bot/kit/bad.py:4: bot.kit imports bot.slack",
        "bot/kit/bad.py:5: bot.kit imports bot.slack",
        "bot/teams/bad.py:1 imports the private _settings from broker.cli",
        "bot/teams/bad.py:2 imports the agent API module (broker.api)",
        "bot/teams/bad.py:3: bot.teams imports bot.slack",
        "bot/teams/bad.py:4: bot.teams imports bot.slack",
    ]


def _cycles(folder: str) -> list[list[str]]:
    """The import circles among the modules under ``folder`` (every import counts: at the top,
    inside a function, or only for type checking), each as the modules around it."""
    paths = {_module_name(p): p for p in sorted((ROOT / folder).rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        edges = set()
        for _line, module, names in _imports(path):
            modules = [f"{module}.{n}" for n in names if f"{module}.{n}" in paths]  # from a package import a module
            for target in modules if modules and len(modules) == len(names) else [module, *modules]:
                if target in paths and target != name:
                    edges.add(target)
        graph[name] = edges
    found, index, low, stack, on_stack = [], {}, {}, [], set()

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_no_import_circles_among_the_modules_of_bot():
    """Issue 15: "No import circles among the modules of bot/" (a listener gets its
    collaborators; it does not import the desk that built it, not even for type checking)."""
    assert _cycles("bot") == []


def test_the_circle_checker_sees_a_circle(tmp_path, monkeypatch):
    """The check above can fail: a circle through a type-checking-only import is reported."""
    pkg = tmp_path / "bot" / "teams"
    pkg.mkdir(parents=True)
    (tmp_path / "bot" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "desk.py").write_text("from .handler import TurnHandler\n")
    (pkg / "handler.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .desk import Desk\n")
    (pkg / "cards.py").write_text("from . import handler\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert _cycles("bot") == [["bot.teams.desk", "bot.teams.handler"]]
