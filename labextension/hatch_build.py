"""The build hook pyproject.toml names: build the JupyterLab bundle only when it is missing.

The bundle is committed (``nbmergesave/labextension``), so an install, editable
or not, needs no Node.js. Set ``NBMERGESAVE_BUILD_LABEXTENSION=1`` to rebuild it
from ``labextension/src`` with npm during the install (``npm run build`` in
``labextension/`` does the same by hand).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

BUNDLE = Path("nbmergesave/labextension")


def build(target_name: str, version: str, **kwargs: Any) -> None:
    wanted = os.environ.get("NBMERGESAVE_BUILD_LABEXTENSION") == "1"
    if not wanted and (BUNDLE / "package.json").is_file() and (BUNDLE / "static" / "style.js").is_file():
        return
    from hatch_jupyter_builder import npm_builder

    npm_builder(target_name, version, path="labextension", build_cmd="build", npm=["npm"], force=True)
