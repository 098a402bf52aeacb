"""Ctrl-C and SIGTERM stop `llmtrain train` after a step with a checkpoint (exit 130/143) and the run resumes bit for bit;
a second Ctrl-C stops at once with the last complete checkpoint intact; one writer per run folder (an flock that a
kill -9 releases); no silent overwrite; readers never see a half-written checkpoint."""
import os, random, signal, socket, time
from pathlib import Path
import pytest, torch
from llmtrain.core import load_config
from llmtrain.training import load_checkpoint, load_run, read_metrics, train, RunExistsError
from relutil import TINY, popen_cli, run_cli, run_main, metrics

pytestmark = pytest.mark.xdist_group('interrupts')
MAX, EVAL = 60, 10
ARGS = [*TINY, f'max_iters={MAX}', f'lr_decay_iters={MAX}', f'eval_interval={EVAL}', 'log_interval=1', 'eval_iters=200']   # an evaluation lasts long enough for two signals

def last_row(csv: Path, t_start=0):
    "(iteration, is_val_row) of the last complete line of metrics.csv written after `t_start` (ns), or (0, False)."
    if not csv.exists() or csv.stat().st_mtime_ns <= t_start: return 0, False
    lines = [l.split(',') for l in csv.read_text().split('\n')[1:-1]]
    lines = [f for f in lines if len(f) > 3 and f[0].isdigit()]
    return (int(lines[-1][0]), lines[-1][3] != '') if lines else (0, False)

def wait_for(p, cond, timeout=120, what=''):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond(): return
        if p.poll() is not None: raise AssertionError(f"the run ended (rc {p.returncode}) before {what}")
        time.sleep(0.002)
    raise AssertionError(f"no {what} within {timeout} s")

def finish(p, timeout=120):
    p.wait(timeout=timeout); return p.returncode

@pytest.fixture(scope='module')
def scenario(tmp_path_factory):
    "An uninterrupted run, and one stopped by SIGINT, then SIGTERM, then two quick SIGINTs during an evaluation, each resumed."
    tmp = tmp_path_factory.mktemp('interrupts')
    full = run_cli('train', *ARGS, f'out_dir={tmp}', 'name=full')
    assert full.returncode == 0, full.stderr
    rng, rd, stops, log = random.Random(24), tmp/'stopped', [], tmp/'log.txt'
    for n, kind in enumerate(['SIGINT', 'SIGTERM', 'twice']):
        resumed_from = stops[-1]['ckpt_iter'] if stops else 0
        target = resumed_from + rng.randint(3, 8) + (EVAL if kind == 'twice' else 0)
        t_start, mark = time.time_ns(), log.stat().st_size if log.exists() else 0
        p = popen_cli('train', *(['--resume', rd] if n else [*ARGS, f'out_dir={tmp}', 'name=stopped']), log=log)
        if kind == 'twice':            # both signals while an eval step's evaluation runs (its train row is written, no val row yet)
            wait_for(p, lambda: (lambda r: r[0] >= target and r[0] % EVAL == 0 and not r[1])(last_row(rd/'metrics.csv', t_start)),
                     what='an evaluation')
            before = load_checkpoint(rd/'ckpt.pt')['iter']
            os.kill(p.pid, signal.SIGINT); time.sleep(0.02); os.kill(p.pid, signal.SIGINT)
        else:
            wait_for(p, lambda: last_row(rd/'metrics.csv', t_start)[0] >= target, what=f'iteration {target}')
            before = None
            os.kill(p.pid, getattr(signal, kind))
        rc = finish(p)
        out = log.read_bytes()[mark:].decode()
        loads = {q.name: load_checkpoint(q)['iter'] for q in rd.glob('*.pt')}             # every checkpoint on disk loads
        stops.append(dict(kind=kind, target=target, rc=rc, out=out, ckpt_iter=loads['ckpt.pt'], before=before,
                          csv_iter=last_row(rd/'metrics.csv')[0], tmp_left=sorted(q.name for q in rd.glob('.*.tmp'))))
    fin = run_cli('train', '--resume', rd)
    return dict(full=tmp/'full', stopped=rd, stops=stops, final=fin)

def test_a_signal_stops_after_the_step_with_a_checkpoint_and_a_one_line_message(scenario):
    for s, code in zip(scenario['stops'][:2], (130, 143)):
        assert s['rc'] == code, s
        assert s['ckpt_iter'] == s['csv_iter'] >= s['target'], s          # the checkpoint of the step the signal finished
        lines = [l for l in s['out'].splitlines() if l.strip()]
        assert lines[-1] == (f"llmtrain train: {s['kind']} at iteration {s['ckpt_iter']}: checkpoint {scenario['stopped']/'ckpt.pt'}; "
                             f"resume with: llmtrain train --resume {scenario['stopped']}"), s['out']
        assert 'Traceback' not in s['out'] and not s['tmp_left'], s

def test_a_second_ctrl_c_stops_at_once_and_leaves_the_last_checkpoint(scenario):
    s = scenario['stops'][2]
    assert s['rc'] == 130 and 'Traceback' not in s['out'], s
    assert 'a second SIGINT stopped the run at once; the last complete checkpoint is' in s['out'], s['out']
    assert s['ckpt_iter'] == s['before'] < s['csv_iter'], s                   # no checkpoint of the cut-short step
    assert not s['tmp_left'], s

def test_the_resumed_run_equals_the_uninterrupted_one_bitwise(scenario):
    fin = scenario['final']
    assert fin.returncode == 0, fin.stderr
    a, b = metrics(scenario['full']), metrics(scenario['stopped'])
    assert len(a) == MAX + MAX // EVAL
    assert a.equals(b), a.compare(b) if a.shape == b.shape else (a.shape, b.shape)
    wa, wb = load_checkpoint(scenario['full']/'ckpt.pt')['model'], load_checkpoint(scenario['stopped']/'ckpt.pt')['model']
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)

SHORT = [*TINY, 'max_iters=6', 'eval_interval=3', 'keep_last=2', 'ckpt_interval=1']

def test_rerunning_a_name_stops_with_a_named_error_and_overwrite_replaces_it(tmp_path, capsys):
    assert run_main(capsys, 'train', *SHORT, f'out_dir={tmp_path}', 'name=same')[0] == 0
    rd = tmp_path/'same'
    snap = {p.name: p.read_bytes() for p in rd.iterdir() if p.is_file() and p.name != '.lock'}
    rc, err = run_main(capsys, 'train', *TINY, 'max_iters=4', 'seed=5', f'out_dir={tmp_path}', 'name=same')
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    best = min(r['val_loss'] for r in read_metrics(rd/'metrics.csv') if 'val_loss' in r)
    assert f"already holds a run (6 iterations; best validation loss {best:.4f};" in err, err
    assert all(w in err for w in (f'--resume {rd}', 'another name=', 'overwrite=true')), err
    assert {p.name: p.read_bytes() for p in rd.iterdir() if p.is_file() and p.name != '.lock'} == snap   # untouched
    with pytest.raises(RunExistsError): train(load_config(None, [*TINY, 'max_iters=4', f'out_dir={tmp_path}', 'name=same']))
    assert run_main(capsys, 'train', *TINY, 'max_iters=4', 'eval_interval=4', 'seed=5', f'out_dir={tmp_path}', 'name=same',
                    'overwrite=true')[0] == 0
    assert [int(r['iter']) for r in read_metrics(rd/'metrics.csv')] == [4, 4]        # only the new run's rows (log 4, eval 4)
    assert not list(rd.glob('ckpt-*.pt')) and load_checkpoint(rd/'ckpt.pt')['iter'] == 4    # the old run's extra checkpoints went

def test_unnamed_runs_in_the_same_second_get_two_folders(tmp_path, capsys):
    for _ in range(2): assert run_main(capsys, 'train', *TINY, 'max_iters=2', 'eval_interval=2', f'out_dir={tmp_path}')[0] == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2 and all(n.startswith('pydoc-gpt-') for n in names), names

def test_two_processes_racing_for_one_name(tmp_path):
    args = [*TINY, 'max_iters=300', 'eval_interval=100', f'out_dir={tmp_path}', 'name=race']
    ps = [popen_cli('train', *args, log=tmp_path/f'log{i}.txt') for i in range(2)]
    rcs = [finish(p) for p in ps]
    assert sorted(rcs) == [0, 2], rcs
    win, lose = (0, 1) if rcs[0] == 0 else (1, 0)
    err = (tmp_path/f'log{lose}.txt').read_text()
    locked = f"is being written by another process (pid {ps[win].pid} on {socket.gethostname()}, since"
    assert locked in err or 'already holds a run (300 iterations' in err, err      # the winner had finished: the second error
    print('loser saw:', 'the lock' if locked in err else 'the finished run')
    rd = tmp_path/'race'
    assert [int(r['iter']) for r in read_metrics(rd/'metrics.csv')][-2:] == [300, 300] and len(read_metrics(rd/'metrics.csv')) == 33
    assert load_checkpoint(rd/'ckpt.pt')['iter'] == 300 and (rd/'model.safetensors').is_file()

def test_a_second_writer_is_refused_and_kill9_frees_the_lock(tmp_path):
    rd = tmp_path/'held'
    p = popen_cli('train', *TINY, 'max_iters=100000', 'eval_interval=100000', 'ckpt_interval=5', f'out_dir={tmp_path}', 'name=held')
    try:
        wait_for(p, lambda: (rd/'ckpt.pt').exists(), what='the first checkpoint')
        r = run_cli('train', '--resume', rd)
        assert r.returncode == 2 and f"pid {p.pid} on {socket.gethostname()}" in r.stderr and 'Traceback' not in r.stderr, r.stderr
    finally:
        os.kill(p.pid, signal.SIGKILL); p.wait()
    r = run_cli('train', '--resume', rd, 'max_iters=' + str(load_checkpoint(rd/'ckpt.pt')['iter'] + 3))
    assert r.returncode == 0, r.stderr

def test_a_reader_looping_over_load_run_during_training_never_errs(tmp_path):
    rd = tmp_path/'read'
    p = popen_cli('train', *TINY, 'max_iters=400', 'eval_interval=50', 'ckpt_interval=1', f'out_dir={tmp_path}', 'name=read')
    wait_for(p, lambda: (rd/'ckpt.pt').exists(), what='the first checkpoint')
    n, iters = 0, set()
    while p.poll() is None:
        model, tok, cfg = load_run(rd)                          # never a half-written file
        iters.add(load_checkpoint(rd/'ckpt.pt')['iter'])
        read_metrics(rd/'metrics.csv')
        n += 1
    assert p.returncode == 0 and n >= 5 and len(iters) >= 3, (p.returncode, n, iters)
    load_run(rd)                                                # the final model.safetensors
    print(f"{n} loads of {len(iters)} different checkpoints")
