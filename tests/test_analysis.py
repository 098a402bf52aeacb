"""Run registry, search spaces, sweeps (kill -9 and restart, failures, parallel workers, notebook trials), successive
halving and the sweep command, on real run folders."""
import contextlib, fcntl, io, json, os, signal, subprocess, sys, time
from collections import Counter
from pathlib import Path
import numpy as np
import pandas as pd
import pytest, torch
import yaml
from fastcore.script import anno_parser
import llmtrain.training
from llmtrain.core import ConfigError, DataError
from llmtrain.training import train
from llmtrain.analysis import (load_runs, load_metrics, load_space, expand_trials, sweep, sweep_cmd, halving_rungs, promote,
                               best_config, SweepError, notebook_parameters, plot_curves, plot_metric_vs, plot_heatmap)
from conftest import has_shakespeare

ROOT = Path(__file__).resolve().parents[1]
CORPUS = 'tinyshakespeare' if has_shakespeare() else 'pydoc'
TINY = dict(corpus=CORPUS, n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4, max_iters=20, eval_interval=10,
            eval_iters=2, log_interval=5, warmup_iters=2, sample_tokens=0, precision='fp32', device='cpu')

def events(root):
    return [json.loads(l) for l in (Path(root)/'sweep.log').read_text().splitlines()]

def starts(root, rung=None):
    return Counter(e['trial'] for e in events(root) if e['event'] == 'start' and (rung is None or e['rung'] == rung))

# ---------------------------------------------------------------- search spaces

def test_grid_expansion_is_the_cartesian_product_in_order():
    t = expand_trials({'grid': {'lr': [1e-3, 3e-3], 'n_embd': [64, 128, 256], 'bias': [True]}})
    assert len(t) == 6
    assert t[0] == {'lr': 1e-3, 'n_embd': 64, 'bias': True} and t[1] == {'lr': 1e-3, 'n_embd': 128, 'bias': True}
    assert t[-1] == {'lr': 3e-3, 'n_embd': 256, 'bias': True}
    assert len({tuple(d.values()) for d in t}) == 6

def test_random_expansion_draws_from_each_distribution():
    space = {'random': {'lr': {'log_uniform': ['1e-5', 1e-1]}, 'dropout': {'uniform': [0.1, 0.3]},
                        'warmup_iters': {'randint': [5, 7]}, 'n_layer': [2, 4, 6]},
             'grid': {'n_embd': [32, 64]}, 'trials': 4000, 'seed': 3}
    df = pd.DataFrame(expand_trials(space))
    assert len(df) == 4000 and list(df.columns) == ['n_embd', 'lr', 'dropout', 'warmup_iters', 'n_layer']
    assert df['lr'].between(1e-5, 1e-1).all() and df['dropout'].between(0.1, 0.3).all()
    assert set(df['warmup_iters']) == {5, 6, 7} and set(df['n_layer']) == {2, 4, 6} and set(df['n_embd']) == {32, 64}
    decade = np.floor(np.log10(df['lr'])).value_counts(normalize=True)    # log-uniform: each of 4 decades ~ 1/4
    assert len(decade) == 4 and (abs(decade - 0.25) < 0.03).all()
    assert abs(df['dropout'].mean() - 0.2) < 0.005
    assert expand_trials(space) == expand_trials(space)                    # seeded
    assert expand_trials(space, seed=4, n_trials=5) != expand_trials(space, n_trials=5)
    assert len(expand_trials(space, n_trials=7)) == 7                      # the argument wins over the file
    g = expand_trials({'grid': {'lr': [1, 2, 3]}}, strategy='random', n_trials=200, seed=0)
    assert {d['lr'] for d in g} == {1, 2, 3}

BAD_SPACES = [
    ('grdi: {lr: [1.0e-3]}', "Unknown key 'grdi' in .*Did you mean 'grid'"),
    ('grid: {lr: 1.0e-3}', 'grid.lr must be a non-empty list'),
    ('grid: {lr: []}', 'grid.lr must be a non-empty list'),
    ('random: {lr: {loguniform: [1.0e-4, 1.0e-2]}}\ntrials: 2', "random.lr.*Did you mean 'log_uniform'"),
    ('random: {lr: {log_uniform: [-1, 1.0e-2]}}\ntrials: 2', 'log_uniform needs 0 < low'),
    ('random: {lr: {uniform: [3, 1]}}\ntrials: 2', 'uniform needs low < high'),
    ('random: {n_layer: {randint: [1, 2.5]}}\ntrials: 2', 'is not an integer'),
    ('random: {lr: 0.1}\ntrials: 2', 'random.lr must be one of'),
    ('grid: {lr: [1]}\nrandom: {lr: [2]}\ntrials: 2', 'appear in both grid and random'),
    ('grid: {lr: [1]}\nrandom: {dropout: [0.1]}\nstrategy: grid', 'use strategy: random'),
    ('grid: {lr: [1]}\nstrategy: bayes', "strategy='bayes' must be"),
    ('grid: {lr: [1]}\ntrials: 3', 'trials applies to random search'),
    ('grid: {out_dir: [a, b]}', 'grid.out_dir: the sweep names each trial'),
    ('base: {lr: 1.0e-3}', 'varies nothing'),
    ('grid: {lr: [1]}\nhalving: {eta: 3, min_iter: 10}', "Unknown key 'min_iter' in halving.*Did you mean 'min_iters'"),
    ('grid: {lr: [1]}\nhalving: {eta: 1}', 'eta=1 must be an integer >= 2'),
    ('- lr\n- n_embd', 'must be a mapping'),
    ('grid: {lr: [1.0e-3\n', 'is not valid YAML'),
]

@pytest.mark.parametrize('text,match', BAD_SPACES)
def test_bad_space_files_are_refused_with_the_key_named(tmp_path, text, match):
    p = tmp_path/'space.yaml'
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        sweep(p, root=tmp_path/'sw', verbose=False)
    assert not (tmp_path/'sw').exists()                                    # refused before any work

@pytest.mark.parametrize('space,kw,match', [
    ({'grid': {'n_layers': [1, 2]}}, {}, r"trial t000-n_layers=1: Unknown config key 'n_layers'. Did you mean 'n_layer'"),
    ({'grid': {'n_embd': [16, 17]}}, {}, r'trial t001-n_embd=17: n_embd=17 must be divisible by n_head=2'),
    ({'grid': {'lr': [1e-3, 1e-5]}}, {}, r'trial t001-lr=1e-05: min_lr=0.0001 must be in \[0, lr=1e-05\]'),
    ({'grid': {'lr': ['fast']}}, {}, r"lr='fast' is not a valid float"),
    ({'random': {'lr': [1e-3]}}, {}, 'random search needs the number of trials'),
    ({'grid': {'lr': [1e-3]}}, {'workers': 0}, 'workers=0 must be a positive integer'),
    ({'grid': {'lr': [1e-3, 2e-3]}}, {'halving': 3}, 'single rung'),
    ({'grid': {'max_iters': [10, 20], 'lr': [1e-3, 2e-3]}}, {'halving': 2}, 'set max_iters in base'),
    ({'grid': {'lr': [1e-3]}}, {'base': {'name': 'x'}}, 'base sets'),
    ({'grid': {'lr': [1e-3]}}, {'notebook': 'missing.ipynb'}, 'does not exist'),
])
def test_bad_trials_are_refused_before_any_work(tmp_path, space, kw, match):
    with pytest.raises(ConfigError, match=match):
        sweep({'base': TINY, **space}, **{'root': tmp_path/'sw', 'verbose': False, **kw})
    assert not (tmp_path/'sw').exists()

# ---------------------------------------------------------------- restarts

def test_killed_sweep_restarts_without_redoing_finished_trials(tmp_path):
    space = tmp_path/'space.yaml'
    space.write_text(yaml.safe_dump({'base': {**TINY, 'max_iters': 60}, 'grid': {'lr': [1e-3, 3e-3, 1e-2], 'n_embd': [16, 32]}}))
    root = tmp_path/'sw'
    code = f"from llmtrain.analysis import sweep_cmd; sweep_cmd({str(space)!r}, root={str(root)!r})"
    p = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not list(root.glob('*/result.json')):
        if p.poll() is not None: pytest.fail(f"the sweep ended (status {p.returncode}) before its first trial finished: {p.stderr.read()}")
        assert time.time() < deadline, 'no trial finished in 300 s'
        time.sleep(0.01)
    os.kill(p.pid, signal.SIGKILL)
    p.wait(); p.stderr.close()
    finished = {r.parent.name for r in root.glob('*/result.json')}
    assert 1 <= len(finished) < 6, finished
    for r in root.glob('*/result.json'): assert json.loads(r.read_text())['status'] == 'done'   # never half-written
    killed = {e['trial'] for e in events(root) if e['event'] == 'start'}    # trials the killed process had begun
    res = sweep(str(space), root=root, verbose=False)                      # the same command again
    assert set(res.loc[~res['executed'], 'trial']) == finished              # finished trials skipped...
    assert set(res.loc[res['executed'], 'trial']) == set(res['trial']) - finished   # ...and only the others run
    assert (res['status'] == 'done').all() and (res['iters'] == 60).all()
    s = starts(root)
    assert all(s[t] == 1 for t in finished)                                # each finished trial was trained once
    assert all(s[t] == 1 + (t in killed) for t in set(res['trial']) - finished)   # the others once more if begun
    ref = sweep(str(space), root=tmp_path/'ref', verbose=False)             # a sweep nobody interrupted
    assert res['val_loss'].tolist() == ref['val_loss'].tolist()            # the same numbers, bitwise
    again = sweep(str(space), root=root, verbose=False)
    assert not again['executed'].any()

def test_unfinished_trial_continues_from_its_checkpoint(tmp_path):
    space = {'base': TINY, 'grid': {'lr': [1e-3, 1e-2]}}
    ref = sweep(space, root=tmp_path/'sw', verbose=False)
    t1 = Path(ref.loc[1, 'path'])
    (t1/'result.json').unlink()
    cfg = yaml.safe_load((t1/'config.yaml').read_text())                   # the state a kill at iteration 10 leaves
    train(llmtrain.training.TrainConfig(**{**cfg, 'max_iters': 10, 'lr_decay_iters': 20}))
    res = sweep(space, root=tmp_path/'sw', verbose=False)
    assert res['executed'].tolist() == [False, True]
    done = [e for e in events(tmp_path/'sw') if e['event'] == 'done']
    assert done[-1]['trial'] == ref.loc[1, 'trial'] and done[-1]['resumed_from'] == 10
    assert res['val_loss'].tolist() == ref['val_loss'].tolist()
    assert pd.read_csv(t1/'metrics.csv')['iter'].max() == 20

def test_failed_trial_is_reported_and_rerun_diverged_trial_is_a_result(tmp_path):
    later = tmp_path/'later.txt'
    space = {'base': {**TINY, 'grad_clip': 0.0, 'min_lr': 0.0, 'schedule': 'constant'},
             'grid': {'corpus': ['pydoc', str(later)], 'lr': [1e-3, 1e6]}}
    with pytest.raises(SweepError, match=r"2 of 4 trials failed: t002-corpus=later.txt-lr=0.001: CorpusNotFoundError") as e:
        sweep(space, root=tmp_path/'sw', verbose=False)
    res = e.value.results
    assert res['status'].tolist() == ['done', 'diverged', 'failed', 'failed']
    assert np.isnan(res.loc[1, 'val_loss']) and 'NaN/Inf' in json.loads((Path(res.loc[1, 'path'])/'result.json').read_text())['error']
    assert (tmp_path/'sw'/res.loc[2, 'trial']/'error.txt').read_text().startswith('Traceback')
    later.write_text((ROOT/'README.md').read_text() * 3)                 # the fix
    res = sweep(space, root=tmp_path/'sw', verbose=False)
    assert res['executed'].tolist() == [False, False, True, True]
    assert res['status'].tolist() == ['done', 'diverged', 'done', 'diverged']
    assert not (tmp_path/'sw'/res.loc[2, 'trial']/'error.txt').exists()
    assert best_config(res, 'val_loss').lr == 1e-3                         # a diverged trial is never the best

def test_a_different_sweep_or_a_running_one_is_refused(tmp_path):
    space = {'base': TINY, 'grid': {'lr': [1e-3]}}
    sweep(space, root=tmp_path/'sw', verbose=False)
    with pytest.raises(ConfigError, match='holds a different sweep'):
        sweep({'base': {**TINY, 'n_embd': 32}, 'grid': {'lr': [1e-3]}}, root=tmp_path/'sw', verbose=False)
    with open(tmp_path/'sw'/'.sweep.lock', 'w') as f:                       # another process holds the sweep
        fcntl.flock(f, fcntl.LOCK_EX)
        code = f"from llmtrain.analysis import sweep; sweep({space!r}, root={str(tmp_path/'sw')!r})"
        r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
        assert r.returncode != 0 and 'Another sweep is running' in r.stderr

# ---------------------------------------------------------------- successive halving

def test_halving_rungs_and_promotion():
    assert halving_rungs(9, 500) == [[56, 9], [167, 3], [500, 1]]
    assert halving_rungs(8, 800, eta=2) == [[100, 8], [200, 4], [400, 2], [800, 1]]
    assert halving_rungs(10, 900, eta=3) == [[100, 10], [300, 3], [900, 1]]
    assert halving_rungs(4, 1000, eta=2, min_iters=100) == [[125, 4], [250, 2], [500, 1], [1000, 1]]
    assert promote({'a': 3.0, 'b': 1.0, 'c': 2.0, 'd': 1.0}, 2) == ['b', 'd']
    assert promote({'a': float('nan'), 'b': None, 'c': float('inf'), 'd': 5.0}, 2) == ['d']
    with pytest.raises(ConfigError, match='too small'): halving_rungs(27, 10, eta=3)

def test_successive_halving_keeps_the_best_and_resumes_them_exactly(tmp_path, monkeypatch):
    space = {'base': {**TINY, 'max_iters': 40}, 'grid': {'lr': [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 1e6]},
             'halving': {'eta': 2, 'min_iters': 10}}
    space['base'].update(grad_clip=0.0, min_lr=0.0)                        # lr=1e6 diverges at the first rung
    plan = halving_rungs(6, 40, eta=2, min_iters=10)
    assert plan == [[10, 6], [20, 3], [40, 1]]
    # an injected failure in the second rung: the sweep stops there, and the rerun repeats only that trial
    real, failed = llmtrain.training.train, []
    def flaky(cfg, resume=None, callbacks=()):
        if cfg.max_iters == 20 and not failed:
            failed.append(cfg.name); raise RuntimeError('injected failure')
        return real(cfg, resume=resume, callbacks=callbacks)
    monkeypatch.setattr(llmtrain.training, 'train', flaky)
    with pytest.raises(SweepError, match='injected failure'):
        sweep(space, root=tmp_path/'sw', verbose=False)
    monkeypatch.setattr(llmtrain.training, 'train', real)
    res = sweep(space, root=tmp_path/'sw', verbose=False)
    assert starts(tmp_path/'sw', 0) == Counter({t: 1 for t in res['trial']})      # rung 1 never repeated
    assert starts(tmp_path/'sw', 1)[failed[0]] == 2 and sum(starts(tmp_path/'sw', 1).values()) == 4
    rec = {t: json.loads((tmp_path/'sw'/t/'result.json').read_text()) for t in res['trial']}
    assert rec[res.loc[5, 'trial']]['status'] == 'diverged' and rec[res.loc[5, 'trial']]['rung'] == 0
    alive = list(rec)
    for k, (iters, _) in enumerate(plan):
        loss = {t: next(h['val_loss'] for h in rec[t]['history'] if h['rung'] == k) for t in alive}
        for t in alive:
            if rec[t]['rung'] == k and rec[t]['status'] == 'done':         # stopped here: trained to this budget only
                assert pd.read_csv(tmp_path/'sw'/t/'metrics.csv')['iter'].max() == iters
        if k + 1 < len(plan):
            finite = sorted((l, t) for t, l in loss.items() if l is not None)
            keep = [t for _, t in finite[:plan[k + 1][1]]]
            assert sorted(t for t in alive if rec[t]['rung'] > k) == sorted(keep)
            alive = keep
    finite = res[res['status'] == 'done']
    assert finite['iters'].sum() == 2 * 10 + 2 * 20 + 40                   # 100 iterations; the full grid: 5 x 40
    assert not res.loc[5, 'iters'] >= 10                                   # the diverged trial stopped early (or NaN)
    winner = res.loc[res['rung'] == 2, 'trial'].item()
    assert res.loc[res['val_loss'].idxmin(), 'trial'] == winner
    direct = train(llmtrain.training.TrainConfig(**{**space['base'], 'lr': rec[winner]['overrides']['lr'], 'progress': False,
                                                      'out_dir': str(tmp_path), 'name': 'direct'}))
    a, b = pd.read_csv(tmp_path/'direct'/'metrics.csv'), pd.read_csv(tmp_path/'sw'/winner/'metrics.csv')
    assert a['train_loss'].dropna().tolist() == b['train_loss'].dropna().tolist()          # bitwise: three resumed pieces
    assert direct.best_val == rec[winner]['best_val_loss']
    assert not sweep(space, root=tmp_path/'sw', verbose=False)['executed'].any()

# ---------------------------------------------------------------- the registry

def test_load_runs_and_load_metrics_on_real_run_folders(tmp_path):
    from llmtrain.cli import eval_cmd
    base = {**TINY, 'out_dir': str(tmp_path/'runs'), 'progress': False}
    train(llmtrain.training.TrainConfig(**base, name='a'))
    train(llmtrain.training.TrainConfig(**{**base, 'max_iters': 10, 'lr_decay_iters': 30}, name='b'))
    train(llmtrain.training.TrainConfig(**{**base, 'max_iters': 30, 'lr_decay_iters': 30}, name='b'), resume=tmp_path/'runs'/'b')
    with contextlib.redirect_stdout(io.StringIO()): eval_cmd(run=str(tmp_path/'runs'/'b'), batches=2, device='cpu')
    sweep({'base': TINY, 'grid': {'n_embd': [16, 32]}}, root=tmp_path/'runs'/'sweep-w', verbose=False)
    (tmp_path/'runs'/'.ipynb_checkpoints'/'x').mkdir(parents=True)
    (tmp_path/'runs'/'.ipynb_checkpoints'/'x'/'config.yaml').write_text('lr: 1\n')      # hidden: not a run
    df = load_runs(tmp_path/'runs')
    assert df['run'].tolist() == ['a', 'b', 'sweep-w/t000-n_embd=16', 'sweep-w/t001-n_embd=32']
    for _, r in df.iterrows():
        m = pd.read_csv(Path(r['path'])/'metrics.csv')
        assert r['final_val_loss'] == m['val_loss'].dropna().iloc[-1] and r['best_val_loss'] == m['val_loss'].min()
        assert r['final_train_loss'] == m['train_loss'].dropna().iloc[-1] and r['iters'] == m['iter'].max()
        assert r['tokens_per_s'] == m['tokens_per_s'].median()
        assert r['finished'] and r['env_precision'] == 'fp32' and r['env_device'] == 'cpu' and r['env_torch']
    b = df.set_index('run').loc['b']
    assert b['max_iters'] == 30 and b['iters'] == 30 and b['eval_batches'] == 2
    assert abs(b['eval_perplexity'] - np.exp(b['eval_loss'])) < 1e-6
    e = pd.read_csv(tmp_path/'runs'/'b'/'metrics.csv')['elapsed_s'].to_numpy()
    saved = torch.load(tmp_path/'runs'/'b'/'ckpt.pt', weights_only=True)['elapsed_s']
    assert (np.diff(e) >= 0).all() and saved >= e.max() > 0                # one clock over both sessions, saved with the run
    assert abs(b['wall_s'] - e.max()) < 1e-9
    w = df[df['sweep'] == 'sweep-w']
    assert w['trial'].tolist() == ['t000-n_embd=16', 't001-n_embd=32'] and w['n_embd'].tolist() == [16, 32]
    assert (w['trial_status'] == 'done').all() and pd.isna(df.loc[0, 'trial'])
    lm = load_metrics(df)
    assert set(lm['run']) == set(df['run']) and set(lm.columns) == {'run', 'iter', 'tokens', 'elapsed_s', 'metric', 'value'}
    bm = lm[(lm['run'] == 'b') & (lm['metric'] == 'train_loss')]
    assert bm['iter'].tolist() == list(range(5, 31, 5)) and bm['elapsed_s'].is_monotonic_increasing
    assert len(load_metrics(tmp_path/'runs'/'a', 'val_loss')) == 2
    assert len(load_runs([tmp_path/'runs'/'a', tmp_path/'runs'/'sweep-w'])) == 3
    import matplotlib; matplotlib.use('Agg')
    for ax in (plot_curves(df, hue='n_embd'), plot_metric_vs(df, 'n_embd', hue='max_iters'),
               plot_heatmap(df, 'n_embd', 'max_iters', 'final_val_loss')):
        ax.figure.savefig(tmp_path/'plot.png'); assert (tmp_path/'plot.png').stat().st_size > 5000
    bc = best_config(df, max_iters=100)
    assert bc.max_iters == 100 and bc.name is None and bc.out_dir == 'runs'
    assert bc.n_embd == int(df.loc[df['final_val_loss'].idxmin(), 'n_embd'])
    with pytest.raises(DataError, match='train a run first'): load_runs(tmp_path/'nowhere')
    with pytest.raises(DataError, match="No column 'val'"): best_config(df, 'val')

# ---------------------------------------------------------------- the command and notebooks

def test_sweep_cmd_parses_its_arguments_and_runs_workers_in_parallel(tmp_path):
    parser = anno_parser(sweep_cmd, prog='llmtrain sweep')
    help_ = parser.format_help()
    for word in ('grid:', 'random:', 'log_uniform', 'randint', 'choice', 'trials', 'halving', 'eta', 'base:'):
        assert word in help_, word
    space = tmp_path/'space.yaml'
    space.write_text('random:\n  lr: {log_uniform: [1e-3, 1e-2]}\n  n_embd: [16, 32]\ntrials: 4\nseed: 5\n')
    args = parser.parse_args([str(space), *(f'{k}={v}' for k, v in {**TINY, 'max_iters': 60}.items()), '--workers', '2',
                              '--root', str(tmp_path/'sw')])
    with contextlib.redirect_stdout(io.StringIO()) as out:
        df = sweep_cmd(**{k: v for k, v in vars(args).items() if k in sweep_cmd.__code__.co_varnames})
    assert len(df) == 4 and (df['status'] == 'done').all() and df['lr'].between(1e-3, 1e-2).all()
    assert df[['lr', 'n_embd']].values.tolist() == pd.DataFrame(expand_trials(load_space(space)))[['lr', 'n_embd']].values.tolist()
    assert 'best:' in out.getvalue()
    pids = {e['pid'] for e in events(tmp_path/'sw') if e['event'] == 'start'}
    assert len(pids) == 2 and os.getpid() not in pids                        # two worker processes
    runs = load_runs(tmp_path/'sw')
    assert (runs['n_layer'] == 1).all() and (runs['env_torch_threads'] == 1).all()
    assert pd.read_csv(tmp_path/'sw'/'results.csv')['trial'].tolist() == df['trial'].tolist()
    one = tmp_path/'one.yaml'
    one.write_text('grid: {lr: [2.0e-3]}\n')                               # a config file under the space's base
    tiny = [f'{k}={v}' for k, v in {**TINY, 'max_iters': 5, 'eval_interval': 5, 'eval_iters': 1}.items()]
    with contextlib.redirect_stdout(io.StringIO()):
        sweep_cmd(str(one), root=str(tmp_path/'cfg'), config=str(ROOT/'configs'/'shakespeare-char-cpu.yaml'), overrides=tiny)
    r = load_runs(tmp_path/'cfg').iloc[0]
    assert (r['tie_weights'], r['lr_decay_iters'], r['lr'], r['eval_iters'], r['iters']) == (False, 2000, 2e-3, 1, 5)
    with pytest.raises(ConfigError, match="Override 'lr' is not of the form key=value"):
        sweep_cmd(str(space), root=str(tmp_path/'x'), overrides=['lr'])

def test_notebook_trials_run_chapter_6_through_papermill(tmp_path):
    nb = ROOT/'nbs'/'06_training.ipynb'
    params = notebook_parameters(nb)
    assert {'smoke', 'corpus', 'device', 'max_iters', 'n_layer', 'n_head', 'n_embd', 'block_size', 'batch_size',
            'out_dir'} <= set(params)
    with pytest.raises(ConfigError, match=r"'lr' is not a parameter of 06_training.ipynb \(its parameters: smoke, corpus"):
        sweep({'grid': {'lr': [1e-3]}}, notebook=nb, root=tmp_path/'no', verbose=False)
    with pytest.raises(ConfigError, match='halving'):
        sweep({'grid': {'n_embd': [32, 64]}, 'halving': 2}, notebook=nb, root=tmp_path/'no', verbose=False)
    res = sweep({'base': {'smoke': True, 'corpus': CORPUS, 'device': 'cpu', 'max_iters': 10, 'n_layer': 1},
                 'grid': {'n_embd': ['32']}}, notebook=str(nb), root=tmp_path/'sw', verbose=False)
    assert res['status'].tolist() == ['done'] and res.loc[0, 'iters'] == 10 and res.loc[0, 'n_embd'] == 32
    report = Path(res.loc[0, 'report'])
    assert report == (tmp_path/'sw'/'t000-n_embd=32.ipynb').resolve() and report.is_file()
    cells = json.loads(report.read_text())['cells']
    injected = [''.join(c['source']) for c in cells if 'injected-parameters' in c['metadata'].get('tags', [])]
    assert 'n_embd = 32' in injected[0] and f"out_dir = \"{(tmp_path/'sw'/'t000-n_embd=32').resolve()}\"" in injected[0]
    runs = load_runs(tmp_path/'sw')
    assert runs['run'].tolist() == ['t000-n_embd=32/notebook-06']
    assert runs.loc[0, 'n_embd'] == 32 and runs.loc[0, 'n_layer'] == 1 and runs.loc[0, 'trial'] == 't000-n_embd=32'
    assert not sweep({'base': {'smoke': True, 'corpus': CORPUS, 'device': 'cpu', 'max_iters': 10, 'n_layer': 1},
                      'grid': {'n_embd': [32]}}, notebook=str(nb), root=tmp_path/'sw', verbose=False)['executed'].any()
