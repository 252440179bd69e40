"""Run every notebook and save the first figure each draws as ``docs/images/notebook_<name>.png``, for the README.

The README's notebook figures come from the notebooks themselves, never drawn by hand:

    python docs/notebook_figures.py
"""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path

import nbclient
import nbformat

ROOT = Path(__file__).resolve().parents[1]


def first_figure(path: Path) -> bytes | None:
    """The PNG of the first figure-tagged cell of a notebook, run in a scratch folder."""
    notebook = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as scratch:
        nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": scratch}}).execute()
    for cell in notebook.cells:
        if "figure" in cell.metadata.get("tags", []):
            for output in cell.outputs:
                if "image/png" in output.get("data", {}):
                    return base64.b64decode(output["data"]["image/png"])
    return None


def main() -> None:
    """Write every notebook's first figure."""
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        png = first_figure(path)
        if png is not None:
            target = ROOT / "docs" / "images" / f"notebook_{path.stem}.png"
            target.write_bytes(png)
            print(f"wrote {target.relative_to(ROOT)} ({len(png)} bytes)")


if __name__ == "__main__":
    main()
