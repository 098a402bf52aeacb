"""Sweeps on Optuna with real processes and a real study: workers sharing a grid, a worker killed with SIGKILL, restarts,
pruning, bad input, the command and notebook trials."""
import contextlib, io, json, os, signal, subprocess, sys, time
from pathlib import Path
import pandas as pd
import pytest, yaml
import optuna
from optuna.trial import TrialState
from fastcore.script import anno_parser
from llmtrain.core import ConfigError
from llmtrain.analysis import load_runs, best_config
from llmtrain.sweeps import sweep, sweep_cmd, open_study, load_space, SweepError

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(corpus='pydoc', n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4, max_iters=20, eval_interval=10,
            eval_iters=2, log_interval=5, warmup_iters=2, sample_tokens=0, precision='fp32', device='cpu')

def env():
    e = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', MPLBACKEND='Agg')
    e['PYTHONPATH'] = os.pathsep.join([str(ROOT), *filter(None, [e.get('PYTHONPATH')])])
    return e

def trials(root):
    "The study's trials (read-only), newest state."
    return open_study(root).get_trials(deepcopy=False)

def params_of(ts, state=TrialState.COMPLETE):
    return sorted(tuple(sorted(t.params.items())) for t in ts if t.state == state)

def test_two_worker_processes_share_a_grid_without_duplicates(tmp_path):
    grid = {'lr': [1e-3, 3e-3], 'n_embd': [16, 32]}
    df = sweep({'base': TINY, 'grid': grid}, root=tmp_path/'sw', workers=2, heartbeat=2, verbose=False)
    ts = [t for t in trials(tmp_path/'sw') if not t.user_attrs.get('surplus')]
    assert len(ts) == 4 and all(t.state == TrialState.COMPLETE for t in ts)
    assert params_of(ts) == sorted((('lr', a), ('n_embd', b)) for a in grid['lr'] for b in grid['n_embd'])   # each point once
    pids = {t.user_attrs['pid'] for t in ts}
    assert len(pids) == 2 and os.getpid() not in pids                       # two worker processes did the work
    assert sorted(df['trial']) == sorted(p.name for p in (tmp_path/'sw').glob('t*') if p.is_dir())
    assert (df['iters'] == 20).all() and df['value'].tolist() == df['final_val_loss'].tolist()
    assert pd.read_csv(tmp_path/'sw'/'results.csv')['number'].tolist() == df['number'].tolist()
    runs = load_runs(tmp_path/'sw')                                         # the trials are ordinary run folders
    assert sorted(runs['run']) == sorted(df['trial']) and (runs['env_torch_threads'] == 1).all()
    assert best_config(df, 'value').lr == df.loc[df['value'].idxmin(), 'lr']

def test_a_worker_killed_mid_trial_is_failed_requeued_and_the_study_goes_on(tmp_path):
    space = tmp_path/'space.yaml'
    # trials of a few seconds, so that the kill lands mid-trial also on a quiet machine (150 iterations took half a second)
    base = {**TINY, 'max_iters': 1500, 'eval_interval': 500, 'ckpt_interval': 100, 'log_interval': 100}
    space.write_text(yaml.safe_dump({'base': base, 'grid': {'lr': [1e-3, 2e-3, 3e-3]}}))
    root = tmp_path/'sw'
    log = open(tmp_path/'log.txt', 'wb')
    p = subprocess.Popen([sys.executable, '-m', 'llmtrain.cli', 'sweep', str(space), '--root', str(root), '--workers', '2',
                          '--heartbeat', '2'], stdout=log, stderr=subprocess.STDOUT, env=env(), cwd=ROOT)
    victim, deadline = None, time.time() + 120
    while victim is None:                            # a running trial past a checkpoint at 200, with 400 or more iterations to go
        assert p.poll() is None and time.time() < deadline, (tmp_path/'log.txt').read_text()[-3000:]
        time.sleep(0.05)
        if not list(root.glob('t*/metrics.csv')): continue                 # the study exists once a trial trains
        with contextlib.suppress(Exception):
            for t in trials(root):
                m = Path(t.user_attrs.get('run_dir', '/nonexistent'))/'metrics.csv'
                if t.state == TrialState.RUNNING and m.exists() and 3 < len(m.read_text().splitlines()) <= 12: victim = t
    os.kill(victim.user_attrs['pid'], signal.SIGKILL)
    assert p.wait(timeout=120) == 0, (tmp_path/'log.txt').read_text()[-3000:]
    ts = trials(root)
    dead = next(t for t in ts if t.number == victim.number)
    assert dead.state == TrialState.FAIL                                    # failed by the heartbeat...
    retry, = [t for t in ts if t.system_attrs.get('failed_trial') == victim.number]
    assert retry.state == TrialState.COMPLETE and retry.params == victim.params   # ...queued again and finished
    assert retry.user_attrs['run_dir'] == victim.user_attrs['run_dir'] and retry.user_attrs['pid'] != victim.user_attrs['pid']
    assert params_of(ts) == [(('lr', v),) for v in (1e-3, 2e-3, 3e-3)]     # every grid point finished exactly once
    m = pd.read_csv(Path(retry.user_attrs['run_dir'])/'metrics.csv')
    assert m.dropna(subset=['train_loss'])['iter'].tolist() == list(range(100, 1501, 100))   # resumed: one history, no repeats

def test_a_restarted_sweep_does_not_redo_finished_trials(tmp_path):
    space = {'base': {**TINY, 'max_iters': 10}, 'random': {'lr': {'log_uniform': [1e-3, 1e-2]}}, 'trials': 2, 'seed': 1}
    first = sweep(space, root=tmp_path/'sw', verbose=False)
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path/'sw').glob('t*/metrics.csv')}
    assert len(stamps) == 2
    again = sweep(space, root=tmp_path/'sw', verbose=False)
    assert len(trials(tmp_path/'sw')) == 2                                  # no new trial
    assert again['value'].tolist() == first['value'].tolist()
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps              # no run folder was touched
    other = sweep(space, root=tmp_path/'sw2', verbose=False)               # the same seed in another folder: the same draws
    assert sorted(other['lr']) == sorted(first['lr'])
    with pytest.raises(ConfigError, match='holds a different sweep'):
        sweep({**space, 'trials': 3}, root=tmp_path/'sw', verbose=False)

def test_successive_halving_prunes_a_bad_trial(tmp_path):
    base = {**TINY, 'max_iters': 40, 'min_lr': 0.0}
    space = {'base': base, 'grid': {'lr': [1e-6, 1e-2, 5e-3]}, 'halving': {'eta': 2, 'min_iters': 10}}
    df = sweep(space, root=tmp_path/'sw', verbose=False).set_index('lr')
    assert df.loc[1e-6, 'number'] > 0                                       # ASHA: a trial alone at a rung always goes on
    assert df.loc[1e-6, 'state'] == 'PRUNED' and df.loc[1e-6, 'iters'] == 10   # stopped at the first rung
    assert pd.isna(df.loc[1e-6, 'value'])                                   # a pruned trial is not a result
    assert (df['state'] == 'COMPLETE').any() and (df.loc[df['state'] == 'COMPLETE', 'iters'] == 40).all()
    st = open_study(tmp_path/'sw')
    bad = next(t for t in st.trials if t.params['lr'] == 1e-6)
    assert list(bad.intermediate_values) == [10] and isinstance(st.pruner, optuna.pruners.SuccessiveHalvingPruner)
    assert bad.intermediate_values[10] > min(t.intermediate_values[10] for t in st.trials if t.number != bad.number)
    assert (tmp_path/'sw'/df.loc[1e-6, 'trial']/'ckpt.pt').is_file()        # the pruned run keeps its last checkpoint

@pytest.mark.parametrize('space,match', [
    ({'grid': {'lr': [1e-3]}, 'halvng': {'eta': 2}}, "Unknown key 'halvng' in the search space. Did you mean 'halving'"),
    ({'random': {'lr': {'loguniform': [1e-4, 1e-2]}}, 'trials': 2}, r"Unknown key 'loguniform' in random.lr. Did you mean 'log_uniform'"),
    ({'random': {'lr': {'log_uniform': [0, 1e-2]}}, 'trials': 2}, 'random.lr: log_uniform needs 0 < low'),
    ({'random': {'dropout': {'uniform': [0.3, 0.1]}}, 'trials': 2}, r'random.dropout: uniform needs low < high'),
    ({'random': {'lr': 0.1}, 'trials': 2}, 'random.lr must be one of'),
    ({'grid': {'n_layers': [1, 2]}}, r"trial n_layers=1: Unknown config key 'n_layers'. Did you mean 'n_layer'"),
    ({'grid': {'n_embd': [16, 17]}}, 'trial n_embd=17: n_embd=17 must be divisible by n_head=2'),
    ({'grid': {'lr': [1e-3]}, 'strategy': 'tpe'}, 'tpe search needs the number of trials'),
])
def test_bad_input_is_a_config_error_naming_the_key(tmp_path, space, match):
    with pytest.raises(ConfigError, match=match):
        sweep({'base': TINY, **space}, root=tmp_path/'sw', verbose=False)
    assert not (tmp_path/'sw').exists()                                     # refused before any work

def test_bad_space_file_from_the_command_line(tmp_path, capsys):
    from llmtrain.cli import main
    p = tmp_path/'space.yaml'
    p.write_text('grid: {lr: [1.0e-3]}\ntrails: 3\n')
    with pytest.raises(SystemExit) as e: main(['sweep', str(p), '--root', str(tmp_path/'sw')])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Unknown key 'trails'" in err and "Did you mean 'trials'" in err
    assert not (tmp_path/'sw').exists()

def test_sweep_cmd_help_config_overrides_and_a_failing_trial(tmp_path):
    help_ = anno_parser(sweep_cmd, prog='llmtrain sweep').format_help()
    for word in ('grid:', 'random:', 'log_uniform', 'randint', 'choice', 'trials', 'halving', 'hyperband', 'tpe', '--storage',
                 '--workers', '--heartbeat'):
        assert word in help_, word
    one = tmp_path/'one.yaml'
    one.write_text('grid: {lr: [2.0e-3]}\n')                               # a config file under the space's base
    tiny = [f'{k}={v}' for k, v in {**TINY, 'max_iters': 5, 'eval_interval': 5, 'eval_iters': 1}.items()]
    with contextlib.redirect_stdout(io.StringIO()) as out:
        sweep_cmd(str(one), root=str(tmp_path/'cfg'), config=str(ROOT/'configs'/'shakespeare-char-cpu.yaml'), overrides=tiny)
    assert 'best: t000-lr=0.002' in out.getvalue()
    r = load_runs(tmp_path/'cfg').iloc[0]
    assert (r['tie_weights'], r['lr_decay_iters'], r['lr'], r['eval_iters'], r['iters']) == (False, 2000, 2e-3, 1, 5)
    with pytest.raises(ConfigError, match="Override 'lr' is not of the form key=value"):
        sweep_cmd(str(one), root=str(tmp_path/'x'), overrides=['lr'])
    later = tmp_path/'later.txt'                                            # a trial that fails, then is fixed
    space = {'base': TINY, 'grid': {'corpus': ['pydoc', str(later)]}}
    with pytest.raises(SweepError, match=r"1 of 2 trials failed; trial \d \(t00\d-corpus=later.txt\): CorpusNotFoundError"):
        sweep(space, root=tmp_path/'sw', verbose=False)
    later.write_text((ROOT/'README.md').read_text() * 3)
    res = sweep(space, root=tmp_path/'sw', verbose=False)
    assert sorted(res['state']) == ['COMPLETE', 'COMPLETE', 'FAIL'] and res['retry_of'].notna().sum() == 1

def test_notebook_trials_run_chapter_6_through_papermill(tmp_path):
    nb = ROOT/'nbs'/'06_training.ipynb'
    with pytest.raises(ConfigError, match=r"grid.lr is not a parameter of 06_training.ipynb \(its parameters: smoke, corpus"):
        sweep({'grid': {'lr': [1e-3]}}, notebook=nb, root=tmp_path/'no', verbose=False)
    with pytest.raises(ConfigError, match='Pruning needs the validation loss'):
        sweep({'grid': {'n_embd': [32, 64]}, 'halving': 2}, notebook=nb, root=tmp_path/'no', verbose=False)
    space = {'base': {'smoke': True, 'corpus': 'pydoc', 'device': 'cpu', 'max_iters': 10, 'n_layer': 1}, 'grid': {'n_embd': ['32']}}
    res = sweep(space, notebook=str(nb), root=tmp_path/'sw', verbose=False)
    assert res['state'].tolist() == ['COMPLETE'] and res.loc[0, 'iters'] == 10 and res.loc[0, 'n_embd'] == 32
    report = Path(res.loc[0, 'report'])
    assert report == tmp_path/'sw'/'t000-n_embd=32.ipynb' and report.is_file()
    cells = json.loads(report.read_text())['cells']
    injected = [''.join(c['source']) for c in cells if 'injected-parameters' in c['metadata'].get('tags', [])]
    assert 'n_embd = 32' in injected[0] and f"out_dir = \"{(tmp_path/'sw'/'t000-n_embd=32').resolve()}\"" in injected[0]
    runs = load_runs(tmp_path/'sw')
    assert runs['run'].tolist() == ['t000-n_embd=32/notebook-06'] and runs.loc[0, 'n_embd'] == 32
