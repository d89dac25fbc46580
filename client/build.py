"""Build the ``jitgate-client`` distribution (sdist and wheel) from this repository.

The client is a slice of the ``broker`` package: ``broker/client/`` and the two core
modules it imports (``broker/jose.py``, ``broker/filemodes.py`` and the ``broker/errors.py`` they raise).
This script stages exactly those next to ``client/pyproject.toml`` in a temporary folder,
writes the server's version into ``VERSION``, and runs ``python -m build`` there (the way
Prefect builds ``prefect-client`` from its repository). It refuses to build when a staged
module imports a part of ``broker`` that is not staged, so the slice cannot go stale.

    python client/build.py [--outdir DIST] [extra `python -m build` arguments]
"""

from __future__ import annotations

import argparse
import ast
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# What the client distribution holds, relative to the repository root.
MODULES = ["broker/__init__.py", "broker/py.typed", "broker/jose.py", "broker/errors.py", "broker/filemodes.py",
           "broker/client"]


def staged_modules(stage: Path) -> set[str]:
    """Dotted names of the Python modules staged under ``stage``."""
    names = set()
    for path in stage.rglob("*.py"):
        parts = list(path.relative_to(stage).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.add(".".join(parts))
    return names


def missing_imports(stage: Path) -> list[str]:
    """``module: imported name`` for each import of a ``broker`` module that is not staged."""
    have = staged_modules(stage)
    missing = []
    for path in sorted(stage.rglob("*.py")):
        rel = path.relative_to(stage)
        package = list(rel.parent.parts)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - node.level + 1]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                # `from . import x` may name a submodule: check both.
                targets = [stem] + [f"{stem}.{a.name}" for a in node.names]
                if not any(t in have for t in targets) and stem.split(".")[0] == "broker":
                    missing.append(f"{rel}: {stem}")
            elif isinstance(node, ast.Import):
                missing += [f"{rel}: {a.name}" for a in node.names
                            if a.name.split(".")[0] == "broker" and a.name not in have]
    return missing


def stage(into: Path) -> Path:
    """Copy the client's files and its packaging metadata into ``into``; return it."""
    if (ROOT / "broker/__init__.py").read_text().strip():
        raise SystemExit("broker/__init__.py must stay empty: both distributions ship it")
    for rel in MODULES:
        src, dest = ROOT / rel, into / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, dest)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(HERE / name, into / name)
    if (ROOT / "LICENSE").exists():
        shutil.copy2(ROOT / "LICENSE", into / "LICENSE")
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    (into / "VERSION").write_text(version + "\n")
    missing = missing_imports(into)
    if missing:
        raise SystemExit("the client imports core modules it does not ship (add them to MODULES):\n  "
                         + "\n  ".join(missing))
    return into


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--outdir", default=str(ROOT / "dist"), help="where the sdist and wheel go (default: dist/)")
    args, build_args = p.parse_known_args(argv)
    with tempfile.TemporaryDirectory(prefix="jitgate-client-") as tmp:
        src = stage(Path(tmp) / "src")
        cmd = [sys.executable, "-m", "build", "--outdir", str(Path(args.outdir).resolve()), *build_args, str(src)]
        return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
