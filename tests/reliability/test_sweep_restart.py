"""A `llmtrain sweep` killed with SIGKILL in the middle of a trial, then started again with the same command: the finished
trial is kept (not run again, its run folder untouched); the interrupted one, still RUNNING in the study, is failed by
Optuna's heartbeat, queued again and resumed from its checkpoint in the same run folder, ending with the metrics of an
uninterrupted run; the rest run once."""
import os, signal, time
import pandas as pd
import pytest, yaml
from optuna.trial import TrialState
from relutil import TINY, popen_cli, run_cli, metrics
from llmtrain.sweeps import open_study

pytestmark = pytest.mark.xdist_group('sweep-restart')
BASE = {k: yaml.safe_load(v) for k, v in (o.split('=', 1) for o in TINY)}
# long enough (a few seconds a trial) that the kill lands while one trial is done and the next is running, also on a quiet machine
BASE.update(max_iters=300, lr_decay_iters=300, eval_interval=150, log_interval=1, ckpt_interval=5)

def test_a_killed_sweep_restarts_keeping_finished_trials(tmp_path):
    space = tmp_path/'space.yaml'
    space.write_text(yaml.safe_dump(dict(base=BASE, grid=dict(lr=[1e-3, 2e-3, 3e-3]))))
    root = tmp_path/'sweep'
    cmd = ('sweep', space, '--root', root, '--heartbeat', 2)
    p = popen_cli(*cmd, log=tmp_path/'log1.txt')
    t0, done, running = time.time(), [], []
    while not (done and running):                  # kill once one trial is done and another has checkpoints past iteration 10
        assert p.poll() is None and time.time() - t0 < 120, (tmp_path/'log1.txt').read_text()[-2000:]
        time.sleep(0.02)
        if len(list(root.glob('t*/metrics.csv'))) < 2: continue
        ts = open_study(root).get_trials(deepcopy=False)
        done = [t for t in ts if t.state == TrialState.COMPLETE]
        running = [t for t in ts if t.state == TrialState.RUNNING
                   and len((root/t.user_attrs['run_dir']/'metrics.csv').read_text().splitlines()) > 12]
    os.kill(p.pid, signal.SIGKILL); p.wait()
    assert p.returncode == -signal.SIGKILL
    ts = open_study(root).get_trials(deepcopy=False)                  # the study as the kill left it
    done, running = [t for t in ts if t.state == TrialState.COMPLETE], [t for t in ts if t.state == TrialState.RUNNING]
    assert len(done) >= 1 and len(running) == 1, [(t.number, t.state) for t in ts]
    first, second = done[0], running[0]
    assert (root/second.user_attrs['run_dir']/'ckpt.pt').is_file()
    kept = (root/first.user_attrs['run_dir']/'metrics.csv').read_bytes()
    r = run_cli(*cmd)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f'{len(done)} finished before' in r.stdout, r.stdout
    ts = open_study(root).get_trials(deepcopy=False)
    assert [t.params for t in ts if t.params == first.params] == [first.params]          # the finished trial did not run again
    assert (root/first.user_attrs['run_dir']/'metrics.csv').read_bytes() == kept
    assert next(t for t in ts if t.number == second.number).state == TrialState.FAIL     # failed by the heartbeat...
    retry, = [t for t in ts if t.system_attrs.get('failed_trial') == second.number]
    assert retry.state == TrialState.COMPLETE and retry.user_attrs['run_dir'] == second.user_attrs['run_dir']   # ...resumed there
    assert sorted(t.params['lr'] for t in ts if t.state == TrialState.COMPLETE) == [1e-3, 2e-3, 3e-3]
    table = pd.read_csv(root/'results.csv')
    assert sorted(table['state']) == ['COMPLETE'] * 3 + ['FAIL'] and (table.loc[table['state'] == 'COMPLETE', 'iters'] == 300).all()
    # the interrupted trial ends exactly where an uninterrupted run of its config ends
    lr = second.params['lr']
    ref = run_cli('train', *[f'{k}={v}' for k, v in BASE.items()], f'lr={lr}', f'out_dir={tmp_path}', 'name=ref')
    assert ref.returncode == 0, ref.stderr[-2000:]
    a, b = metrics(tmp_path/'ref'), metrics(second.user_attrs['run_dir'])
    assert len(a) == 302 and a.equals(b)
