"""The notebooks (``notebooks/*.ipynb``): stored without outputs (default tier), and each runs
top to bottom without an error (the ``notebooks`` tier: ``pytest --notebooks -m notebooks``)."""

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 3, NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path):
    """Outputs make diffs unreadable and go stale: the repository holds the code cells only."""
    nb = json.loads(path.read_text())
    assert nb.get("nbformat") == 4
    for k, cell in enumerate(nb["cells"]):
        where = f"{path.name}: cell {k}"
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"{where} has outputs (clear them before committing)"
            assert cell.get("execution_count") is None, f"{where} has an execution count"
        assert not cell.get("attachments"), f"{where} has attachments"


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path):
    """Execute every cell in a fresh kernel of this Python, in an empty folder (what it builds
    lands there); a cell that raises fails the test with the cell's traceback."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")

    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=1800, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
