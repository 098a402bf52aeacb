"""Injected NaN and Inf, in the loss and in one gradient, under each `nan_policy`: stop raises `NonFiniteError` (by name,
and `llmtrain train` exits 2) with the weights and every checkpoint on disk finite; skip counts the bad steps and leaves
the weights untouched; off lets them through, as configured."""
import math
import pytest, torch
from llmtrain.core import TrainConfig, set_seed
from llmtrain.data import load_corpus, encode_corpus, RandomWindows, eval_windows
from llmtrain.models import create_model
from llmtrain.training import Trainer, Callback, NonFiniteError, load_checkpoint

@pytest.fixture(scope='module')
def data(): return encode_corpus(load_corpus('pydoc')[:50_000])

def make(data, run_dir=None, callbacks=(), **kw):
    cfg = TrainConfig(**{**dict(n_layer=1, n_head=2, n_embd=32, block_size=16, batch_size=4, max_iters=9, log_interval=3,
                                eval_interval=100, eval_iters=2, warmup_iters=1, device='cpu', precision='fp32', progress=False,
                                dropout=0.0), **kw})
    set_seed(0)
    return Trainer(create_model(cfg, data.tokenizer.vocab_size), RandomWindows(data.train, 16, 4), eval_windows(data.val, 16, 4, 2),
                   cfg, run_dir=run_dir, callbacks=callbacks)

class Poison(Callback):
    "At iteration `it`, set the loss (before backward) or one gradient (after backward) to `value`."
    def __init__(self, it, value, where): self.it, self.value, self.where = it, value, where
    def on_before_backward(self, t, loss):
        if t.iter == self.it and self.where == 'loss': loss.data.fill_(self.value)
    def on_after_backward(self, t):
        if t.iter == self.it and self.where == 'grad': next(t.raw_model.parameters()).grad.view(-1)[0] = self.value

def finite(model): return all(torch.isfinite(p).all() for p in model.parameters())

BAD = [(math.nan, 'loss'), (math.inf, 'loss'), (-math.inf, 'loss'), (math.nan, 'grad'), (math.inf, 'grad')]
IDS = ['nan-loss', 'inf-loss', '-inf-loss', 'nan-grad', 'inf-grad']

@pytest.mark.parametrize('value,where', BAD, ids=IDS)
def test_stop_raises_by_name_and_keeps_weights_and_checkpoints_finite(data, tmp_path, value, where):
    t = make(data, tmp_path/'r', [Poison(4, value, where)], ckpt_interval=1)
    with pytest.raises(NonFiniteError, match='nan_policy=skip'): t.fit()
    assert t.iter == 6 and finite(t.raw_model)                  # detected at the log of iteration 6, the update not applied
    for p in (tmp_path/'r').glob('*.pt'):
        assert all(torch.isfinite(v).all() for v in load_checkpoint(p)['model'].values()), p.name

@pytest.mark.parametrize('value,where', BAD, ids=IDS)
def test_skip_skips_exactly_the_bad_step(data, value, where):
    clean, t = make(data), make(data, callbacks=[Poison(4, value, where)], nan_policy='skip')
    clean.fit(); t.fit()
    logs = [m for m in t.history if 'train_loss' in m]
    assert t.iter == 9 and finite(t.raw_model) and logs[-1]['skipped_steps'] == 1
    assert logs[0]['train_loss'] == [m for m in clean.history if 'train_loss' in m][0]['train_loss']   # before: untouched
    assert math.isfinite(logs[-1]['train_loss'])               # after the skipped step, training goes on finite

def test_off_lets_a_nan_through_as_configured(data):
    t = make(data, callbacks=[Poison(4, math.nan, 'grad')], nan_policy='off')
    t.fit()
    assert t.iter == 9 and not finite(t.raw_model)

def test_llmtrain_train_stops_on_a_diverging_run_with_exit_2(tmp_path):
    from relutil import TINY, run_cli
    r = run_cli('train', *TINY, 'lr=1e30', 'grad_clip=0', 'optimizer=sgd', 'momentum=0', 'max_iters=30', 'log_interval=5',
                'warmup_iters=0', 'schedule=constant', f'out_dir={tmp_path}', 'name=r')
    assert r.returncode == 2 and 'NaN/Inf' in r.stderr and 'Traceback' not in r.stderr, r.stderr[-1500:]
