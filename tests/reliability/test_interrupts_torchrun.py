"""SIGTERM and SIGINT sent to the `torchrun` launcher of a 2-process `llmtrain train` (gloo, CPU): the agent forwards the
signal once to each worker's process group; every rank stops at the same step (agreed one step after the signal, between
log steps too), rank 0 writes the checkpoint with both ranks' open log window, nothing hangs, and `--resume` under
torchrun ends bitwise equal to an uninterrupted 2-process run.

torchrun itself then raises its `SignalException` (a traceback of its own) and exits 1; each worker exits 143 (SIGTERM) or
130 (SIGINT) after rank 0 printed the one-line message."""
import json, os, random, signal, subprocess, sys, time
from pathlib import Path
import pytest, torch
from llmtrain.training import load_checkpoint, read_metrics
from relutil import TINY, env, metrics

pytestmark = pytest.mark.xdist_group('interrupts')
MAX, LOG, EVAL = 90, 5, 30
ARGS = [*TINY, f'max_iters={MAX}', f'lr_decay_iters={MAX}', f'log_interval={LOG}', f'eval_interval={EVAL}', 'distributed=fsdp']
# The workers run this: llmtrain's CLI, with each rank's last iteration, `interrupted` and exit code written down
WORKER = '''import json, os, sys
from pathlib import Path
from llmtrain import cli, training
out, fit = Path(os.environ['REPORT_DIR']), training.Trainer.fit
def fit_and_report(self):
    try: return fit(self)
    finally: (out/f"fit{self.rank}.json").write_text(json.dumps(dict(iter=self.iter, interrupted=self.interrupted)))
training.Trainer.fit = fit_and_report
try: cli.main(sys.argv[1:]); code = 0
except SystemExit as e: code = e.code
(out/f"exit{os.environ['RANK']}").write_text(str(code)); sys.exit(code)
'''

def torchrun(tmp, *args, report=None):
    "Start `torchrun --standalone --nproc_per_node 2` of llmtrain's CLI (through WORKER) with output to tmp/log.txt."
    report = report or tmp/'report'; report.mkdir(exist_ok=True)
    for p in report.iterdir(): p.unlink()
    (tmp/'worker.py').write_text(WORKER)
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', str(tmp/'worker.py'),
           'train', *map(str, args)]
    log = open(tmp/'log.txt', 'ab')
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**env(), 'REPORT_DIR': str(report)}, cwd=tmp), report

def last_iter(csv: Path, t_start):
    "The iteration of the last complete metrics row written after `t_start` (ns), or 0."
    if not csv.exists() or csv.stat().st_mtime_ns <= t_start: return 0
    rows = [l.split(',') for l in csv.read_text().split('\n')[1:-1]]
    rows = [r for r in rows if len(r) > 3 and r[0].isdigit()]
    return int(rows[-1][0]) if rows else 0

def finish(p, timeout=120):
    "The launcher's exit code; a hang fails the test (and its process tree is killed)."
    try: return p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        subprocess.run(['pkill', '-KILL', '-P', str(p.pid)]); p.kill(); p.wait()
        raise AssertionError(f"torchrun did not end within {timeout} s of the signal: a hang")

@pytest.fixture(scope='module')
def scenario(tmp_path_factory):
    "An uninterrupted 2-process run; one stopped by SIGTERM to torchrun, resumed and stopped by SIGINT, then resumed to the end."
    tmp = tmp_path_factory.mktemp('torchrun_interrupts')
    p, rep = torchrun(tmp, *ARGS, f'out_dir={tmp}', 'name=full', report=tmp/'full_report')
    assert finish(p, 300) == 0, (tmp/'log.txt').read_text()[-5000:]
    rng, rd, stops = random.Random(2024), tmp/'stopped', []
    for n, sig in enumerate([signal.SIGTERM, signal.SIGINT]):
        target = (stops[-1]['ckpt_iter'] if stops else 0) + rng.randint(3, 8)
        t_start, mark = time.time_ns(), (tmp/'log.txt').stat().st_size
        p, rep = torchrun(tmp, *(['--resume', rd] if n else [*ARGS, f'out_dir={tmp}', 'name=stopped']))
        t0 = time.time()
        while last_iter(rd/'metrics.csv', t_start) < target:
            assert p.poll() is None, (tmp/'log.txt').read_bytes()[mark:].decode()[-5000:]
            assert time.time() - t0 < 120, f"no iteration {target} within 120 s"
            time.sleep(0.002)
        os.kill(p.pid, sig); t_sig = time.time()
        rc = finish(p)
        fits = [json.loads((rep/f'fit{r}.json').read_text()) for r in range(2)]
        ck = load_checkpoint(rd/'ckpt.pt')
        stops.append(dict(sig=sig.name, target=target, rc=rc, seconds=time.time() - t_sig, fits=fits, window=ck['log_window'],
                          exits=[int((rep/f'exit{r}').read_text()) for r in range(2)],
                          out=(tmp/'log.txt').read_bytes()[mark:].decode(), ckpt_iter=ck['iter'],
                          csv_iter=int(read_metrics(rd/'metrics.csv')[-1]['iter']),
                          tmp_left=sorted(q.name for q in rd.glob('.*.tmp'))))
    p, rep = torchrun(tmp, '--resume', rd)
    fin = finish(p, 300)
    return dict(full=tmp/'full', stopped=rd, stops=stops, final=fin, log=tmp/'log.txt')

def test_every_rank_stops_at_the_same_step_and_rank0_saves(scenario):
    for s in scenario['stops']:
        code = 128 + signal.Signals[s['sig']]
        assert s['rc'] == 1 and 'SignalException' in s['out'], s          # torchrun's own exit code: 1, after its traceback
        assert s['exits'] == [code, code], s                                  # each worker: 143 (SIGTERM) or 130 (SIGINT)
        assert s['fits'][0] == s['fits'][1] == dict(iter=s['ckpt_iter'], interrupted=s['sig']), s   # the same step on both
        assert s['target'] <= s['csv_iter'] <= s['ckpt_iter'] < MAX, s                # the step both finished, maybe mid-window
        assert s['window']['start'] == s['ckpt_iter'] // LOG * LOG and len(s['window']['loss_sums']) == 2, s
        print(f"{s['sig']}: a row at {s['csv_iter']}, the signal, the stop at {s['ckpt_iter']} ({s['seconds']:.1f} s)")
        line = (f"llmtrain train: {s['sig']} at iteration {s['ckpt_iter']}: checkpoint {scenario['stopped']/'ckpt.pt'}; "
                f"resume with: llmtrain train --resume {scenario['stopped']}")
        assert s['out'].count(line) == 1, s['out']                            # printed by rank 0 only
        assert not s['tmp_left'] and s['seconds'] < 60, s                     # no hang (torchrun kills at 30 s)

def test_the_resumed_torchrun_run_equals_the_uninterrupted_one_bitwise(scenario):
    assert scenario['final'] == 0, scenario['log'].read_text()[-5000:]
    a, b = metrics(scenario['full']), metrics(scenario['stopped'])
    assert len(a) == MAX // LOG + MAX // EVAL
    assert a.equals(b), a.compare(b) if a.shape == b.shape else (a.shape, b.shape)
    wa, wb = load_checkpoint(scenario['full']/'ckpt.pt')['model'], load_checkpoint(scenario['stopped']/'ckpt.pt')['model']
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
