"""The starter policies, approvers and targets, for ``jitgate init``.

A repository checkout has them in ``policies/`` and ``examples/``; an installed
wheel carries the same files as package data under ``broker/defaults/`` (in the
repository those are symlinks to the originals, so there is one copy to edit).
``init`` uses the working folder's own files when it has them and otherwise
copies the shipped ones into the data folder, where they are the operator's to
edit: later runs never overwrite them.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

# Setting name -> (the file or folder in a checkout, its name in the data folder and in broker/defaults/).
STARTER = {
    "JITGATE_POLICY_DIR": ("policies", "policies"),
    "JITGATE_APPROVERS_FILE": ("examples/approvers.yaml", "approvers.yaml"),
    "JITGATE_TARGETS_FILE": ("examples/targets.yaml", "targets.yaml"),
}


def shipped() -> Path:
    """The folder of starter files inside the installed package."""
    return Path(str(resources.files("broker") / "defaults"))


def _present(path: Path) -> bool:
    """A checkout's file, or a policy folder that holds at least one policy."""
    return any(path.glob("*.cedar")) if path.is_dir() else path.is_file()


def place(cwd: Path, data: Path) -> dict[str, tuple[str, bool]]:
    """For each starter setting: the path to write into ``.env`` and whether it was copied.

    A checkout's own path is written relative, as ``.env`` paths are read from where
    ``jitgate serve`` runs; a copy goes under ``data`` as given. An existing copy is kept.
    """
    placed: dict[str, tuple[str, bool]] = {}
    for setting, (in_checkout, name) in STARTER.items():
        if _present(cwd / in_checkout):
            placed[setting] = (in_checkout, False)
            continue
        dest = data / name
        copied = not dest.exists()
        if copied:
            data.mkdir(parents=True, exist_ok=True)
            source = shipped() / name
            if source.is_dir():
                shutil.copytree(source, dest, copy_function=shutil.copyfile)  # writable copies
            else:
                shutil.copyfile(source, dest)
        placed[setting] = (str(dest), copied)
    return placed
