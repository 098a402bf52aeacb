"""kill -9 of `llmtrain train` at five seeded moments (between steps, during a checkpoint write, during an evaluation),
each resumed with `llmtrain train --resume`: the metrics equal an uninterrupted run's bit for bit, and whatever
checkpoint is on disk after a kill loads."""
import os, random, signal, time
from pathlib import Path
import pytest, torch
from llmtrain.training import load_checkpoint
from relutil import TINY, popen_cli, run_cli, metrics

pytestmark = pytest.mark.xdist_group('kill9')
MAX, EVAL = 80, 10
ARGS = [*TINY, f'max_iters={MAX}', f'lr_decay_iters={MAX}', f'eval_interval={EVAL}', 'log_interval=1', 'ckpt_interval=1',
        'eval_iters=40', 'keep_last=3']         # 40 evaluation batches: an evaluation lasts long enough to be caught in it

def rows(csv: Path):
    "The complete lines of metrics.csv as (iter, is_val_row) pairs."
    try: text = csv.read_text()
    except FileNotFoundError: return []
    out = []
    for line in text.split('\n')[1:-1]:               # skip the header and a line still being written
        f = line.split(',')
        if len(f) > 3 and f[0].isdigit(): out.append((int(f[0]), f[3] != ''))
    return out

def wait_and_kill(p, rd: Path, kind: str, target: int, t_start: int, timeout=120):
    "Poll the run folder of process `p` and SIGKILL it at the moment `kind` at or after iteration `target`."
    csv, t0 = rd/'metrics.csv', time.time()
    stale = set(rd.glob('.ckpt.pt.*.tmp'))              # left by an earlier kill: not a write of this process
    while time.time() - t0 < timeout:
        if p.poll() is not None: raise AssertionError(f"the run ended (rc {p.returncode}) before the {kind} kill at {target}")
        fresh = csv.exists() and csv.stat().st_mtime_ns > t_start      # ignore the file the killed run left
        r = rows(csv) if fresh else []
        it = max((i for i, _ in r), default=0)
        if it >= target:
            if kind == 'step': break
            if kind == 'checkpoint' and set(rd.glob('.ckpt.pt.*.tmp')) - stale: break
            if kind == 'eval' and r[-1][0] % EVAL == 0 and not r[-1][1]: break     # the train row of an eval step, no val row yet
        else: time.sleep(0.002)
    else: raise AssertionError(f"no {kind} moment at iteration >= {target} within {timeout} s")
    os.kill(p.pid, signal.SIGKILL); p.wait()
    return p.returncode

@pytest.fixture(scope='module')
def scenario(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('kill9')
    t = time.perf_counter()
    full = run_cli('train', *ARGS, f'out_dir={tmp}', 'name=full')
    assert full.returncode == 0, full.stderr
    rng = random.Random(2026)
    kinds = ['step', 'checkpoint', 'eval', 'checkpoint', 'step']; rng.shuffle(kinds)
    rd, kills, resumed_from = tmp/'killed', [], 0
    for n, kind in enumerate(kinds):
        target = resumed_from + rng.randint(3, 8)
        t_start = time.time_ns()
        args = ['--resume', rd] if n else [*ARGS, f'out_dir={tmp}', 'name=killed']
        p = popen_cli('train', *args, log=tmp/'log.txt')
        rc = wait_and_kill(p, rd, kind, target, t_start)
        tmp_left = sorted(q.name for q in rd.glob('.*.tmp'))
        loads = {q.name: load_checkpoint(q)['iter'] for q in rd.glob('*.pt')}    # every checkpoint on disk loads
        last = max(i for i, _ in rows(rd/'metrics.csv'))
        kills.append(dict(kind=kind, target=target, rc=rc, csv_iter=last, ckpt_iter=loads['ckpt.pt'], tmp_left=tmp_left,
                          loads=loads))
        resumed_from = loads['ckpt.pt']
    fin = run_cli('train', '--resume', rd)
    return dict(tmp=tmp, full=tmp/'full', killed=rd, kills=kills, final=fin, seconds=time.perf_counter() - t)

def test_each_kill_was_a_sigkill_and_left_a_loadable_checkpoint(scenario):
    ks = scenario['kills']
    assert [k['rc'] for k in ks] == [-signal.SIGKILL] * 5
    assert {k['kind'] for k in ks} == {'step', 'checkpoint', 'eval'}
    for k in ks:
        assert 1 <= k['ckpt_iter'] <= k['csv_iter'] + 1, k     # the latest checkpoint is one the run had reached
        assert k['csv_iter'] >= k['target'], k
        if k['kind'] == 'eval': assert k['ckpt_iter'] == k['csv_iter'] - 1, k     # killed before the eval's checkpoint
    print('\n'.join(map(str, ks)), f"\n{scenario['seconds']:.1f} s")

def test_resumed_run_equals_the_uninterrupted_one_bitwise(scenario):
    fin = scenario['final']
    assert fin.returncode == 0, fin.stderr
    a, b = metrics(scenario['full']), metrics(scenario['killed'])
    assert len(a) == MAX + MAX // EVAL
    assert a.equals(b), a.compare(b) if a.shape == b.shape else (a.shape, b.shape)   # every float bit for bit
    wa, wb = load_checkpoint(scenario['full']/'ckpt.pt')['model'], load_checkpoint(scenario['killed']/'ckpt.pt')['model']
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)

def test_no_stale_temporary_files_after_the_final_resume(scenario):
    "A kill -9 during an atomic write leaves its temporary file behind; the next run of the folder must clear them."
    assert scenario['final'].returncode == 0
    assert sorted(q.name for q in scenario['killed'].glob('.*.tmp')) == []
