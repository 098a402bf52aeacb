"""The run registry (load_runs, load_metrics), the comparison plots and best_config, on real run folders."""
import contextlib, io
from pathlib import Path
import numpy as np
import pandas as pd
import pytest, torch
import llmtrain.training
from llmtrain.core import DataError
from llmtrain.training import train
from llmtrain.analysis import load_runs, load_metrics, best_config, plot_curves, plot_metric_vs, plot_heatmap
from conftest import has_shakespeare

CORPUS = 'tinyshakespeare' if has_shakespeare() else 'pydoc'
TINY = dict(corpus=CORPUS, n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4, max_iters=20, eval_interval=10,
            eval_iters=2, log_interval=5, warmup_iters=2, sample_tokens=0, precision='fp32', device='cpu')

# ---------------------------------------------------------------- the registry

def test_load_runs_and_load_metrics_on_real_run_folders(tmp_path):
    from llmtrain.cli import eval_cmd
    base = {**TINY, 'out_dir': str(tmp_path/'runs'), 'progress': False}
    train(llmtrain.training.TrainConfig(**base, name='a'))
    train(llmtrain.training.TrainConfig(**{**base, 'max_iters': 10, 'lr_decay_iters': 30}, name='b'))
    train(llmtrain.training.TrainConfig(**{**base, 'max_iters': 30, 'lr_decay_iters': 30}, name='b'), resume=tmp_path/'runs'/'b')
    with contextlib.redirect_stdout(io.StringIO()): eval_cmd(run=str(tmp_path/'runs'/'b'), batches=2, device='cpu')
    for w in (16, 32):                                                     # a group of runs in a sub-folder
        train(llmtrain.training.TrainConfig(**{**base, 'n_embd': w, 'out_dir': str(tmp_path/'runs'/'grp')}, name=f'w{w}'))
    (tmp_path/'runs'/'.ipynb_checkpoints'/'x').mkdir(parents=True)
    (tmp_path/'runs'/'.ipynb_checkpoints'/'x'/'config.yaml').write_text('lr: 1\n')      # hidden: not a run
    df = load_runs(tmp_path/'runs')
    assert df['run'].tolist() == ['a', 'b', 'grp/w16', 'grp/w32']
    for _, r in df.iterrows():
        m = pd.read_csv(Path(r['path'])/'metrics.csv')
        assert r['final_val_loss'] == m['val_loss'].dropna().iloc[-1] and r['best_val_loss'] == m['val_loss'].min()
        assert r['final_train_loss'] == m['train_loss'].dropna().iloc[-1] and r['iters'] == m['iter'].max()
        assert r['final_val_bpb'] == m['val_bpb'].dropna().iloc[-1] and r['best_val_bpb'] == m['val_bpb'].min() and 0 < r['final_val_bpb'] < 8
        assert r['tokens_per_s'] == m['tokens_per_s'].median()
        assert r['finished'] and r['env_precision'] == 'fp32' and r['env_device'] == 'cpu' and r['env_torch']
    b = df.set_index('run').loc['b']
    assert b['max_iters'] == 30 and b['iters'] == 30 and b['eval_batches'] == 2
    assert abs(b['eval_perplexity'] - np.exp(b['eval_loss'])) < 1e-6
    e = pd.read_csv(tmp_path/'runs'/'b'/'metrics.csv')['elapsed_s'].to_numpy()
    saved = torch.load(tmp_path/'runs'/'b'/'ckpt.pt', weights_only=True)['elapsed_s']
    assert (np.diff(e) >= 0).all() and saved >= e.max() > 0                # one clock over both sessions, saved with the run
    assert abs(b['wall_s'] - e.max()) < 1e-9
    assert df.loc[df['run'].str.startswith('grp/'), 'n_embd'].tolist() == [16, 32]
    lm = load_metrics(df)
    assert set(lm['run']) == set(df['run']) and set(lm.columns) == {'run', 'iter', 'tokens', 'elapsed_s', 'metric', 'value'}
    bm = lm[(lm['run'] == 'b') & (lm['metric'] == 'train_loss')]
    assert bm['iter'].tolist() == list(range(5, 31, 5)) and bm['elapsed_s'].is_monotonic_increasing
    assert len(load_metrics(tmp_path/'runs'/'a', 'val_loss')) == 2
    assert len(load_runs([tmp_path/'runs'/'a', tmp_path/'runs'/'grp'])) == 3
    import matplotlib; matplotlib.use('Agg')
    for ax in (plot_curves(df, hue='n_embd'), plot_metric_vs(df, 'n_embd', hue='max_iters'),
               plot_heatmap(df, 'n_embd', 'max_iters', 'final_val_loss')):
        ax.figure.savefig(tmp_path/'plot.png'); assert (tmp_path/'plot.png').stat().st_size > 5000
    bc = best_config(df, max_iters=100)
    assert bc.max_iters == 100 and bc.name is None and bc.out_dir == 'runs'
    assert bc.n_embd == int(df.loc[df['final_val_loss'].idxmin(), 'n_embd'])
    assert best_config(df, 'final_val_bpb').n_embd == int(df.loc[df['final_val_bpb'].idxmin(), 'n_embd'])   # one axis across tokenizers
    assert plot_curves(df, 'val_bpb', x='tokens').get_ylabel() == 'validation bits per byte'
    with pytest.raises(DataError, match='train a run first'): load_runs(tmp_path/'nowhere')
    with pytest.raises(DataError, match="No column 'val'"): best_config(df, 'val')
