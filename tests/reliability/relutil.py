"""Shared pieces of the reliability suite: a tiny run configuration and ways to run the `llmtrain` CLI in a subprocess."""
import os, subprocess, sys
from pathlib import Path
import pandas as pd

import llmtrain
ROOT = Path(llmtrain.__file__).resolve().parents[1]      # subprocesses run the same library as the tests
# A tiny model on the built-in corpus: a run of a few dozen iterations takes about two seconds of CPU
TINY = ['n_layer=1', 'n_head=2', 'n_embd=32', 'block_size=16', 'batch_size=4', 'eval_iters=2', 'sample_tokens=0',
        'progress=false', 'device=cpu', 'precision=fp32', 'warmup_iters=5', 'dropout=0.1']
# The columns of metrics.csv that a resumed run must reproduce bit for bit (the others are timings)
EXACT = ['iter', 'tokens', 'train_loss', 'val_loss', 'lr', 'grad_norm', 'skipped_steps']

def env():
    e = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', MPLBACKEND='Agg')
    e['PYTHONPATH'] = os.pathsep.join([str(ROOT), *filter(None, [e.get('PYTHONPATH')])])
    return e

def cli_args(*args): return [sys.executable, '-m', 'llmtrain.cli', *map(str, args)]

def run_cli(*args, timeout=300, cwd=None):
    "Run `llmtrain ARGS` to completion; returns the CompletedProcess (text stdout/stderr)."
    return subprocess.run(cli_args(*args), capture_output=True, text=True, timeout=timeout, env=env(), cwd=cwd or ROOT)

def popen_cli(*args, cwd=None, log=None):
    "Start `llmtrain ARGS` in the background (stdout and stderr to `log`)."
    out = open(log, 'ab') if log else subprocess.DEVNULL
    return subprocess.Popen(cli_args(*args), stdout=out, stderr=subprocess.STDOUT, env=env(), cwd=cwd or ROOT)

def metrics(run_dir) -> pd.DataFrame:
    "The reproducible columns of a run's metrics.csv."
    df = pd.read_csv(Path(run_dir)/'metrics.csv')
    return df[[c for c in EXACT if c in df]]

def run_main(capsys, *args):
    "Run `llmtrain ARGS` in this process through `llmtrain.cli.main`: (exit code, stderr). Faster than a subprocess."
    from llmtrain.cli import main
    capsys.readouterr()
    try: main([str(a) for a in args]); rc = 0
    except SystemExit as e: rc = e.code
    return rc, capsys.readouterr().err
