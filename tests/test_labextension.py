"""The JupyterLab bundle shipped in the package is built from labextension/'s current source, and the
README's install enables both halves for a plain ``jupyter lab``."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "labextension"
BUNDLE = REPO / "nbmergesave" / "labextension"


def source_hash() -> str:
    """What labextension/scripts/source-hash.js computes (same recipe)."""
    recorded = json.loads((BUNDLE / "build-source.json").read_text())
    files: list[str] = []
    for rel in recorded["inputs"]:
        path = SOURCE / rel
        files += [p.relative_to(SOURCE).as_posix() for p in sorted(path.rglob("*")) if p.is_file()] if path.is_dir() else [rel]
    digest = hashlib.sha256()
    for rel in sorted(files):
        digest.update(rel.encode() + b"\0")
        digest.update((SOURCE / rel).read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def test_the_shipped_bundle_is_built_from_the_current_source() -> None:
    recorded = json.loads((BUNDLE / "build-source.json").read_text())
    assert recorded["sha256"] == source_hash(), (
        "labextension/ changed since the bundle was built: run `npm install && npm run build` in labextension/ "
        "and commit nbmergesave/labextension")
    built = json.loads((BUNDLE / "package.json").read_text())
    assert built["name"] == "nbmergesave" and (BUNDLE / "static" / built["jupyterlab"]["_build"]["load"].removeprefix("static/")).is_file()


def _listed(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "jupyter", *args], capture_output=True, text=True, timeout=120)
    return done.stdout + done.stderr


def test_the_install_enables_both_extensions() -> None:
    pytest.importorskip("jupyterlab")
    labextensions = _listed("labextension", "list")
    assert any("nbmergesave" in line and "enabled" in line and "OK" in line for line in labextensions.splitlines()), labextensions
    server = _listed("server", "extension", "list")
    assert any("nbmergesave" in line and "enabled" in line for line in server.splitlines()), server
