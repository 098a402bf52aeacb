"""The narrow windows a kill -9 can hit, made deterministic in-process: a crash right after a checkpoint reached the disk
(at a `ckpt_interval` step and at an evaluation), and a resume from a checkpoint in the middle of a log interval.
After each, a resumed Trainer must write the same metrics.csv, bit for bit, as a run that never stopped."""
import random
import numpy as np
import pandas as pd
import pytest, torch
from llmtrain.core import TrainConfig, set_seed
from llmtrain.data import load_corpus, encode_corpus, RandomWindows, eval_windows
from llmtrain.models import create_model
from llmtrain.training import Trainer, Callback, load_checkpoint
from relutil import EXACT

@pytest.fixture(scope='module')
def data(): return encode_corpus(load_corpus('pydoc')[:100_000])

def small(**kw):
    base = dict(n_layer=1, n_head=2, n_embd=32, block_size=16, batch_size=4, max_iters=12, log_interval=1, eval_interval=4,
                eval_iters=2, warmup_iters=2, dropout=0.1, device='cpu', progress=False, precision='fp32', lr_decay_iters=12,
                ckpt_interval=1)
    return TrainConfig(**{**base, **kw})

def make(data, cfg, run_dir, callbacks=()):
    set_seed(cfg.seed)
    return Trainer(create_model(cfg, data.tokenizer.vocab_size), RandomWindows(data.train, cfg.block_size, cfg.batch_size, seed=cfg.seed),
                   eval_windows(data.val, cfg.block_size, cfg.batch_size, cfg.eval_iters, seed=5), cfg, run_dir=run_dir,
                   callbacks=callbacks, tokenizer=data.tokenizer)

class DieAfterCheckpoint(Callback):
    "Crash the moment the checkpoint of iteration `it` is on disk (the last instant a kill -9 can leave it behind)."
    order = 100
    def __init__(self, it): self.it = it
    def on_checkpoint(self, t, path):
        if t.iter == self.it: raise KeyboardInterrupt('killed')

class DieBeforeStep(Callback):
    def __init__(self, it): self.it = it
    def on_step_start(self, t):
        if t.iter == self.it: raise KeyboardInterrupt('killed')

def crash_and_resume(data, tmp_path, cfg, cb):
    make(data, cfg, tmp_path/'full').fit()
    with pytest.raises(KeyboardInterrupt): make(data, cfg, tmp_path/'crash', [cb]).fit()
    t = make(data, cfg, tmp_path/'crash')
    random.seed(9); torch.manual_seed(9); np.random.seed(9)            # a fresh process has other RNG states
    t.load_state_dict(load_checkpoint(tmp_path/'crash'/'ckpt.pt'))
    t.fit()
    a, b = (pd.read_csv(tmp_path/r/'metrics.csv')[EXACT] for r in ('full', 'crash'))
    return a, b

def diff(a, b):
    m = a.merge(b, how='outer', indicator=True)
    return f"rows only in the uninterrupted run (left) or the resumed one (right):\n{m[m['_merge'] != 'both']}"

@pytest.mark.parametrize('it', [6, 8], ids=['interval-checkpoint', 'eval-checkpoint'])
def test_crash_right_after_a_checkpoint_loses_no_metrics_row(data, tmp_path, it):
    a, b = crash_and_resume(data, tmp_path, small(), DieAfterCheckpoint(it))
    assert len(a) == 12 + 3
    assert a.equals(b), diff(a, b)

def test_resume_in_the_middle_of_a_log_interval_logs_the_same_mean_loss(data, tmp_path):
    "ckpt_interval=2 with log_interval=3: the checkpoint of iteration 4 sits inside the log window 4..6."
    a, b = crash_and_resume(data, tmp_path, small(log_interval=3, ckpt_interval=2), DieBeforeStep(4))
    assert a.equals(b), diff(a, b)
