"""Installed-looking distributions in a temporary directory, for entry-point tests.

``write_distribution`` writes the modules of a package and the
``<name>-<version>.dist-info/`` folder that pip would have written (METADATA
and entry_points.txt). With the directory on ``sys.path``
(``monkeypatch.syspath_prepend``) or on ``PYTHONPATH`` (a gunicorn
subprocess), ``importlib.metadata.entry_points(group="comptroller")`` finds
the entry points, as it finds those of a pip-installed package, and the
shared venv is never touched.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path


def write_distribution(
    root: Path,
    name: str,
    entry_points: dict[str, str],
    modules: dict[str, str],
    version: str = "0.1",
    group: str = "comptroller",
) -> Path:
    """Write ``modules`` (file name -> source) and the dist-info of ``name`` into
    ``root``; ``entry_points`` maps entry-point names to ``module[:attr]``."""
    root.mkdir(parents=True, exist_ok=True)
    for filename, source in modules.items():
        path = root / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    # The folder name pip writes: the project name normalised (PEP 427/503).
    folder = root / f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}.dist-info"
    folder.mkdir()
    (folder / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = [f"[{group}]", *(f"{ep} = {value}" for ep, value in entry_points.items())]
    (folder / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return root


def forget_modules(*names: str) -> None:
    """Drop modules a test imported from its temporary directory."""
    for name in names:
        sys.modules.pop(name, None)


def pythonpath_with(root: Path) -> dict[str, str]:
    """The ``PYTHONPATH`` for a subprocess that should find the distributions in ``root``."""
    inherited = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": os.pathsep.join([str(root), *([inherited] if inherited else [])])}
