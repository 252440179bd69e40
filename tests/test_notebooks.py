"""Every notebook in notebooks/ runs from top to bottom on the bundled data, and every figure it draws shows
something that varies: a flat map, a single class or a scatter along one line fails."""

from __future__ import annotations

import json
from pathlib import Path

import nbclient
import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
SPREAD = 0.05
"""What a figure's data must span at least (metres for maps, classes for class maps): a few centimetres."""

_SETUP = "%config InlineBackend.close_figures = False"  # figures stay open after plt.show() until the epilogue reads them
_EPILOGUE = '''
import json as _json, numpy as _np, matplotlib.pyplot as _plt
def _spread(values):
    v = _np.ma.masked_invalid(_np.ma.asarray(values, dtype=float)).compressed()
    return float(v.max() - v.min()) if v.size else 0.0
_found = []
for _n in _plt.get_fignums():
    for _ax in _plt.figure(_n).axes:
        if _ax.get_label() == "<colorbar>":
            continue
        _found += [["image", _spread(_im.get_array())] for _im in _ax.get_images()]
        for _c in _ax.collections:
            _o = _np.asarray(_c.get_offsets())
            if _o.ndim == 2 and len(_o) > 1:
                _found.append(["points", min(_spread(_o[:, 0]), _spread(_o[:, 1]))])
        _found += [["line", _spread(_l.get_ydata())] for _l in _ax.lines if len(_l.get_ydata()) > 2]
        _bars = [_p.get_height() for _p in _ax.patches if hasattr(_p, "get_height")]
        if len(_bars) > 1:
            _found.append(["bars", _spread(_bars)])
print("FIGURE-DATA " + _json.dumps(_found))
'''
_PROLOGUE = "import matplotlib.pyplot as _plt\n_plt.close('all')  # only this cell's figures are read\n"


def test_there_are_notebooks():
    assert NOTEBOOKS


def _figure_data(cell) -> list:
    """What the epilogue printed about a figure cell's artists."""
    for output in cell.outputs:
        if output.get("output_type") == "stream":
            for line in output.get("text", "").splitlines():
                if line.startswith("FIGURE-DATA "):
                    return json.loads(line[len("FIGURE-DATA "):])
    return []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_and_its_figures_vary(path, tmp_path):
    notebook = nbformat.read(path, as_version=4)
    figures = [cell for cell in notebook.cells if "figure" in cell.metadata.get("tags", [])]
    for cell in figures:
        cell.source = _PROLOGUE + cell.source + "\n" + _EPILOGUE
    notebook.cells.insert(0, nbformat.v4.new_code_cell(_SETUP))
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs if o.output_type == "error"]
    assert not errors
    for cell in figures:  # a figure cell must show a picture (matplotlib's inline backend), and one that varies
        first_line = cell.source.splitlines()[2][:80]
        assert any("image/png" in output.get("data", {}) for output in cell.outputs), f"no figure from: {first_line}"
        drawn = _figure_data(cell)
        assert drawn, f"no data behind the figure of: {first_line}"
        flat = [(kind, spread) for kind, spread in drawn if spread <= SPREAD]
        assert not flat, f"flat {flat} in the figure of: {first_line}"


def test_notebooks_are_committed_without_outputs_and_draw_inline():
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        assert all(not cell.outputs for cell in code), path.name
        assert not any('matplotlib.use("Agg")' in cell.source for cell in code), path.name


def test_the_readme_shows_a_figure_drawn_by_each_notebook_that_draws():
    root = NOTEBOOKS[0].parents[1]
    readme = (root / "README.md").read_text()
    for path in NOTEBOOKS:
        if any("figure" in cell.metadata.get("tags", []) for cell in nbformat.read(path, as_version=4).cells):
            image = f"docs/images/notebook_{path.stem}.png"
            assert (root / image).is_file() and image in readme, f"{path.name}: run python docs/notebook_figures.py"
