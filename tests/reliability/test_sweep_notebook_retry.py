"""A notebook sweep trial whose notebook trains a fixed `name=` fails once and is retried: the retry reruns the notebook in
the trial's own folder (emptying its first attempt's run there) instead of stopping with RunExistsError, and another
trial's folder is untouched."""
import subprocess, sys
from pathlib import Path
import nbformat, pytest
from llmtrain.training import read_metrics, RunLockedError
from llmtrain.sweeps import sweep, SweepError, _clear_trial_dir
from relutil import env

HOLD = "import sys, time\nfrom llmtrain.training import run_lock\nwith run_lock(sys.argv[1]): print('held', flush=True); time.sleep(120)"

PARAMS = "out_dir = 'runs'\nlr = 1e-3\nmarker = ''"
TRAIN = '''from pathlib import Path
from llmtrain.core import load_config
from llmtrain.training import train
cfg = load_config(None, corpus='pydoc', n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4, max_iters=6,
                  eval_interval=3, eval_iters=2, log_interval=3, sample_tokens=0, progress=False, device='cpu',
                  precision='fp32', lr=lr, out_dir=out_dir, name='fixed')
t = train(cfg)
if lr == 1e-3 and not Path(marker).exists():          # the first attempt of the first trial fails after training
    Path(marker).write_text('failed once'); raise RuntimeError('the first attempt fails')'''

def notebook(path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(PARAMS, metadata={'tags': ['parameters']}), nbformat.v4.new_code_cell(TRAIN)]
    nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}
    nbformat.write(nb, path)
    return path

def test_a_retried_notebook_trial_with_a_fixed_name_starts_over_in_its_own_folder(tmp_path):
    nb, root = notebook(tmp_path/'fixed.ipynb'), tmp_path/'sw'
    space = {'base': {'marker': str(tmp_path/'marker')}, 'grid': {'lr': [1e-3, 2e-3]}}
    with pytest.raises(SweepError, match='RuntimeError: the first attempt fails'):
        sweep(space, notebook=nb, root=root, verbose=False)
    (first,), (other,) = (list(root.glob(f'*-lr={lr}/fixed')) for lr in ('0.001', '0.002'))   # (Optuna's grid order)
    assert (first/'ckpt.pt').is_file() and (other/'model.safetensors').is_file()
    snap = {p.name: p.read_bytes() for p in other.iterdir() if p.is_file()}
    res = sweep(space, notebook=nb, root=root, verbose=False)          # before: the retry failed with RunExistsError
    assert sorted(res['state']) == ['COMPLETE', 'COMPLETE', 'FAIL'] and res['retry_of'].notna().sum() == 1, res
    retry = res[res['retry_of'].notna()].iloc[0]
    assert retry['state'] == 'COMPLETE' and Path(retry['path']) == first, retry
    assert [int(r['iter']) for r in read_metrics(first/'metrics.csv')] == [3, 3, 6, 6]        # the new attempt's rows only
    assert {p.name: p.read_bytes() for p in other.iterdir() if p.is_file()} == snap        # the other trial's run: untouched
    holder = subprocess.Popen([sys.executable, '-c', HOLD, str(first)], stdout=subprocess.PIPE, text=True, env=env())
    try:                                   # an attempt still writing there: the retry stops by name, and deletes nothing
        assert holder.stdout.readline().strip() == 'held'
        with pytest.raises(RunLockedError, match=f'pid {holder.pid}'): _clear_trial_dir(first.parent)
    finally: holder.kill(); holder.wait()
    assert (first/'ckpt.pt').is_file()
