"""Committed notebooks are stable under open/save in JupyterLab and carry no volatile metadata.

Fix a failure with ``make clean-notebooks`` (``python -m bpbreid.notebook clean``).
"""

import json
from pathlib import Path

import nbformat
import pytest

from bpbreid.notebook import (
    KERNELSPEC,
    VOLATILE_CELL_METADATA,
    VOLATILE_NOTEBOOK_METADATA,
    clean_notebook,
    clean_notebook_file,
)

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(
    p for p in (ROOT / "notebooks").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts
)
FIX = "run `make clean-notebooks` (python -m bpbreid.notebook clean)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_committed_notebook_has_no_volatile_metadata(path: Path):
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert raw["metadata"].get("kernelspec") == KERNELSPEC, f"{path.name}: kernelspec; {FIX}"
    for key in VOLATILE_NOTEBOOK_METADATA:
        assert key not in raw["metadata"], f"{path.name}: notebook metadata {key!r}; {FIX}"
    for index, cell in enumerate(raw["cells"]):
        stale = set(cell.get("metadata", {})) & set(VOLATILE_CELL_METADATA)
        assert not stale, f"{path.name} cell {index}: metadata {sorted(stale)}; {FIX}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_committed_notebook_is_stable_under_open_and_save(path: Path):
    # JupyterLab saves through nbformat: sorted keys, one-space indent, a final newline.
    text = path.read_text(encoding="utf-8")
    saved = nbformat.writes(nbformat.reads(text, as_version=4))
    assert text == saved + "\n", f"{path.name} changes when saved; {FIX}"
    assert all("id" in cell for cell in json.loads(text)["cells"]), f"{path.name}: cell ids"


def test_clean_strips_timestamps_widgets_and_sets_the_kernelspec(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "display_name": "Python 3",
        "language": "python",
        "name": "python3",
    }
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    cell = nbformat.v4.new_code_cell("print(1)")
    cell.metadata["execution"] = {"iopub.execute_input": "2026-01-01T00:00:00.000000Z"}
    cell.metadata["tags"] = ["keep-me"]
    nb.cells.append(cell)
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    assert clean_notebook_file(path) is True
    again = json.loads(path.read_text())
    assert again["metadata"]["kernelspec"] == KERNELSPEC
    assert "widgets" not in again["metadata"]
    assert again["cells"][0]["metadata"] == {"tags": ["keep-me"]}
    assert clean_notebook_file(path) is False  # idempotent
    assert clean_notebook(nbformat.read(path, as_version=4)).metadata["kernelspec"] == KERNELSPEC
