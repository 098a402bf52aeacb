"""Execute every notebook through papermill's Python API with small ('smoke') parameters.

A failing cell fails the test with that cell's traceback (papermill's PapermillExecutionError)."""
from pathlib import Path
import pytest
import papermill as pm

NBS = Path(__file__).resolve().parents[1]/'nbs'
NOTEBOOKS = sorted(p.name for p in NBS.glob('*.ipynb') if not p.name.startswith('_'))
# per-notebook parameters on top of smoke=True; every numbered notebook must declare `smoke` in its parameters cell
PARAMS = {'06_training.ipynb': dict(max_iters=30)}

def parameters_cell(nb):
    import json
    cells = json.loads((NBS/nb).read_text())['cells']
    return [c for c in cells if 'parameters' in c.get('metadata', {}).get('tags', [])]

@pytest.mark.parametrize('nb', [n for n in NOTEBOOKS if n[0].isdigit()])
def test_numbered_notebook_has_parameters(nb):
    cells = parameters_cell(nb)
    assert len(cells) == 1, f"{nb} needs exactly one cell tagged 'parameters'"
    assert 'smoke' in ''.join(cells[0]['source']), f"{nb}'s parameters cell must define smoke"

@pytest.mark.parametrize('nb', NOTEBOOKS)
def test_notebook_executes(nb, tmp_path):
    params = dict(smoke=True, **PARAMS.get(nb, {})) if nb[0].isdigit() else {}
    pm.execute_notebook(str(NBS/nb), str(tmp_path/nb), parameters=params, cwd=str(tmp_path),
                        kernel_name='python3', progress_bar=False, log_output=False)
