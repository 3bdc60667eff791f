"""Take the README's JupyterLab screenshots (docs/*.png): two people, two servers, one folder.

Run from the repository after the README's install: ``python docs/screenshots.py``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from playwright.sync_api import sync_playwright  # noqa: E402

from nbmergesave import notebook_io  # noqa: E402
from tests.lab import CHROMIUM, CHROMIUM_ARGS, Lab, Tab  # noqa: E402
from tests.test_lab_browser import start  # noqa: E402

OUT = Path(__file__).resolve().parent


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="nbmergesave-shots-"))
    root = tmp / "project"
    root.mkdir()
    nb = start(5)
    sources = ["import pandas as pd", "rain = pd.Series([3.1, 0.0, 7.4])", "total = rain.sum()",
               "print('total rainfall', total)", "# notes"]
    for c, s in zip(nb["cells"], sources):
        c["source"] = s
    (root / "clean.ipynb").write_text(notebook_io.dumps(nb))
    (root / "rainfall.ipynb").write_text(notebook_io.dumps(nb))
    a, b = Lab(root, tmp / "a"), Lab(root, tmp / "b")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            people = [browser.new_context(viewport={"width": 1100, "height": 640}) for _ in range(2)]
            alice, bob = Tab(people[0], a, "clean.ipynb"), Tab(people[1], b, "clean.ipynb")
            bob.edit(2, "total = rain.sum().round(1)")
            alice.edit(4, "# Alice: checked the gauge data")
            alice.save()
            bob.save()
            bob.toast("your save was merged")
            bob.page.wait_for_timeout(1500)  # the notification slides in
            bob.page.screenshot(path=str(OUT / "jupyter-merged.png"))

            alice, bob = Tab(people[0], a, "rainfall.ipynb"), Tab(people[1], b, "rainfall.ipynb")
            bob.edit(2, "total = rain.mean()")
            alice.edit(2, "total = rain.sum() * 25.4")
            alice.save()
            bob.save()
            bob.toast("conflict")
            bob.page.locator(".nbmergesave-conflict").wait_for()
            bob.page.wait_for_timeout(1500)  # the notification slides in
            bob.page.screenshot(path=str(OUT / "jupyter-conflict.png"))
            bob.page.locator(".nbmergesave-conflict").get_by_role("button", name="Keep both").click()
            bob.wait("() => !document.querySelector('.nbmergesave-conflict')")
            bob.save()
            bob.page.wait_for_timeout(1500)  # the notification slides in
            bob.page.screenshot(path=str(OUT / "jupyter-settled.png"))
            browser.close()
    finally:
        a.stop()
        b.stop()


if __name__ == "__main__":
    main()
