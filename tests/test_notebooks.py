"""The notebooks in notebooks/: stored without outputs, and they run without errors."""

import json
import pathlib
import sys

import nbformat
import pytest

NOTEBOOKS_DIR = pathlib.Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = ("quickstart.ipynb", "decoding.ipynb", "train_debtags.ipynb")
KERNEL_NAME = "multilabel-jax-test"


def test_every_notebook_is_listed():
  assert sorted(p.name for p in NOTEBOOKS_DIR.glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_valid_and_stripped(name):
  nb = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
  nbformat.validate(nb)
  for i, cell in enumerate(nb.cells):
    if cell.cell_type == "code":
      assert cell.outputs == [], f"{name} cell {i} has stored outputs; strip them."
      assert cell.execution_count is None, f"{name} cell {i} has an execution count."
    assert "execution" not in cell.metadata, f"{name} cell {i} has execution timings."
  assert "widgets" not in nb.metadata, f"{name} stores widget state."
  first_code = next(c for c in nb.cells if c.cell_type == "code")
  assert "import multilabel_jax" in first_code.source and "%pip install" in first_code.source, (
      f"{name}: the first code cell must install the package when it is missing (Colab).")


def _kernel_manager(tmp_path):
  """A kernel manager that starts ipykernel on this interpreter (the test's venv), whatever
  kernel specs the user's Jupyter paths hold."""
  from jupyter_client.kernelspec import KernelSpecManager
  from jupyter_client.manager import KernelManager
  spec_dir = tmp_path / "kernels" / KERNEL_NAME
  spec_dir.mkdir(parents=True)
  spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
          "display_name": "multilabel_jax test", "language": "python"}
  (spec_dir / "kernel.json").write_text(json.dumps(spec))
  specs = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")])
  return KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs)


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_without_errors(name, tmp_path, monkeypatch):
  from nbclient import NotebookClient
  monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
  nb = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
  km = _kernel_manager(tmp_path)
  client = NotebookClient(nb, km=km, timeout=600, allow_errors=False,
                          resources={"metadata": {"path": str(NOTEBOOKS_DIR)}})
  client.execute()  # Raises CellExecutionError on the first failing cell.
  assert km.kernel_spec.argv[0] == sys.executable
  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  figures = [o for o in outputs if "image/png" in o.get("data", {})]
  assert figures, f"{name} drew no figure."
