from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from nbmergesave import notebook_io
from nbmergesave.store import Store


def test_demo_plays_the_main_job_and_leaves_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "nbmergesave", "demo", str(folder)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "-> v4 (clean)" in out and "(1 conflict(s) marked inline)" in out
    assert "nbmergesave conflicts: rainfall.ipynb: cell 3 (load)" in out
    assert out.rstrip().endswith(f"The project is left in {folder}")
    nb = notebook_io.read_notebook(folder / "rainfall.ipynb")
    assert "import math" in nb["cells"][1]["source"] and "wettest =" in nb["cells"][6]["source"]
    assert nb["cells"][2]["source"].startswith("<<<<<<< local")
    with Store.open(folder) as store:
        assert [v.kind for v in store.history(folder / "rainfall.ipynb")].count("merged") == 3
