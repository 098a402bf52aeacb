"""A `llmtrain sweep` killed with SIGKILL in the middle of its second trial, then started again with the same command:
the finished trial is kept (not run again, its result untouched), the interrupted one resumes from its checkpoint and ends
with the metrics of an uninterrupted run, the rest run once; the table lists every trial as done."""
import json, os, signal, time
import pandas as pd
import pytest, yaml
from relutil import TINY, popen_cli, run_cli, metrics

pytestmark = pytest.mark.xdist_group('sweep-restart')
BASE = {k: yaml.safe_load(v) for k, v in (o.split('=', 1) for o in TINY)}
BASE.update(max_iters=40, lr_decay_iters=40, eval_interval=20, log_interval=1, ckpt_interval=1)

def events(root):
    return [json.loads(l) for l in (root/'sweep.log').read_text().splitlines() if l.strip()]

def test_a_killed_sweep_restarts_keeping_finished_trials(tmp_path):
    space = tmp_path/'space.yaml'
    space.write_text(yaml.safe_dump(dict(base=BASE, grid=dict(lr=[1e-3, 2e-3, 3e-3]))))
    root = tmp_path/'sweep'
    p = popen_cli('sweep', space, '--root', root, log=tmp_path/'log1.txt')
    t0 = time.time()
    while time.time() - t0 < 120:                     # kill once trial 0 is done and trial 1 has checkpoints past iteration 10
        assert p.poll() is None, (tmp_path/'log1.txt').read_text()[-2000:]
        done = list(root.glob('*/result.json'))
        ck = [d for d in root.glob('t001-*') if (d/'metrics.csv').exists() and len((d/'metrics.csv').read_text().splitlines()) > 12]
        if len(done) == 1 and ck: break
        time.sleep(0.01)
    os.kill(p.pid, signal.SIGKILL); p.wait()
    assert p.returncode == -signal.SIGKILL
    first, = root.glob('t000-*'); second, = root.glob('t001-*')
    assert (first/'result.json').exists() and not (second/'result.json').exists()
    kept = (first/'result.json').read_bytes()
    r = run_cli('sweep', space, '--root', root)
    assert r.returncode == 0, r.stderr[-2000:]
    assert '1 finished before, 2 to run' in r.stdout, r.stdout
    ev = events(root)
    starts = pd.Series([e['trial'] for e in ev if e['event'] == 'start']).value_counts().to_dict()
    assert starts[first.name] == 1 and starts[second.name] == 2, starts    # the finished trial did not run again
    assert (first/'result.json').read_bytes() == kept
    resumed = [e for e in ev if e['event'] == 'done' and e['trial'] == second.name]
    assert len(resumed) == 1 and resumed[0]['resumed_from'] > 10, resumed          # continued from its checkpoint
    table = pd.read_csv(root/'results.csv')
    assert (table['status'] == 'done').all() and len(table) == 3 and (table['iters'] == 40).all()
    # the interrupted trial ends exactly where an uninterrupted run of its config ends
    ref = run_cli('train', *[f'{k}={v}' for k, v in BASE.items()], 'lr=0.002', f'out_dir={tmp_path}', 'name=ref')
    assert ref.returncode == 0, ref.stderr[-2000:]
    a, b = metrics(tmp_path/'ref'), metrics(second)
    assert len(a) == 42 and a.equals(b)

def test_a_killed_successive_halving_sweep_resumes_its_last_rung(tmp_path):
    "3 trials, eta=3: rung 1 trains all three for 10 iterations, rung 2 continues the best one to 30. Kill inside rung 2."
    space = tmp_path/'space.yaml'
    base = {**BASE, 'max_iters': 30, 'lr_decay_iters': 30, 'eval_interval': 10}
    space.write_text(yaml.safe_dump(dict(base=base, grid=dict(lr=[1e-3, 3e-3, 1e-2]), halving=dict(eta=3))))
    root = tmp_path/'sweep'
    p = popen_cli('sweep', space, '--root', root, log=tmp_path/'log1.txt')
    t0 = time.time()
    while time.time() - t0 < 120:
        assert p.poll() is None, (tmp_path/'log1.txt').read_text()[-2000:]
        ev = events(root) if (root/'sweep.log').exists() else []
        rung2 = [e['trial'] for e in ev if e['event'] == 'start' and e['rung'] == 1]
        if rung2:
            m = root/rung2[0]/'metrics.csv'
            if m.exists() and len(m.read_text().splitlines()) > 16: break      # past iteration 10 of rung 2
        time.sleep(0.01)
    os.kill(p.pid, signal.SIGKILL); p.wait()
    before = {d.name: (d/'result.json').read_bytes() for d in root.glob('t*') if d.is_dir()}
    n_before = len(events(root))
    r = run_cli('sweep', space, '--root', root)
    assert r.returncode == 0, r.stderr[-2000:]
    assert '3 finished before, 0 to run' in r.stdout and '0 finished before, 1 to run' in r.stdout, r.stdout
    ev = events(root)
    second = ev[n_before:]                                              # the events of the restarted sweep
    assert [(e['event'], e['trial'], e['rung']) for e in second if e['event'] == 'start'] == [('start', rung2[0], 1)]
    done = [e for e in second if e['event'] == 'done']
    assert len(done) == 1 and done[0]['resumed_from'] > 10, done
    for name, old in before.items():                                    # rung-1 results of the dropped trials untouched
        if name != rung2[0]: assert (root/name/'result.json').read_bytes() == old
    table = pd.read_csv(root/'results.csv').set_index('trial')
    assert table.loc[rung2[0], 'iters'] == 30 and (table.drop(rung2[0])['iters'] == 10).all()
