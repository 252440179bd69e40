"""Every notebook in notebooks/ runs from top to bottom on the bundled data, drawing its figures inline."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path):
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs if o.output_type == "error"]
    assert not errors
    figures = [cell for cell in notebook.cells if "figure" in cell.metadata.get("tags", [])]
    for cell in figures:  # a figure cell must show a picture (matplotlib's inline backend, or an image)
        assert any("image/png" in output.get("data", {}) for output in cell.outputs), f"no figure from: {cell.source[:80]}"


def test_notebooks_are_committed_without_outputs_and_draw_inline():
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        assert all(not cell.outputs for cell in code), path.name
        assert not any('matplotlib.use("Agg")' in cell.source for cell in code), path.name
