"""The Trainer's guarantees: exact resume (mid-accumulation, after an eval), exact accumulation, the NaN guard,
callback order, early stopping, atomic checkpoints, readable logs, compile, and models other than the GPT."""
import os, random
import numpy as np
import pandas as pd
import pytest, torch
from llmtrain.core import TrainConfig, set_seed, CheckpointError
from llmtrain.data import load_corpus, encode_corpus, RandomWindows, ResidentBatches, eval_windows
from llmtrain.models import create_model, SeedCNN
from llmtrain import training
from llmtrain.training import (Trainer, Callback, NonFiniteError, load_checkpoint, save_checkpoint, read_tensorboard)

@pytest.fixture(scope='module')
def data():
    return encode_corpus(load_corpus('pydoc')[:200_000])

def small(**kw):
    base = dict(n_layer=1, n_head=2, n_embd=32, block_size=16, batch_size=4, max_iters=12, log_interval=1,
                eval_interval=4, eval_iters=2, warmup_iters=2, dropout=0.1, device='cpu', progress=False,
                precision='fp32', lr_decay_iters=12)
    return TrainConfig(**{**base, **kw})

def make(data, cfg, run_dir=None, callbacks=()):
    set_seed(cfg.seed)
    return Trainer(create_model(cfg, data.tokenizer.vocab_size),
                   RandomWindows(data.train, cfg.block_size, cfg.batch_size, seed=cfg.seed),
                   eval_windows(data.val, cfg.block_size, cfg.batch_size, cfg.eval_iters, seed=5), cfg,
                   run_dir=run_dir, callbacks=callbacks, tokenizer=data.tokenizer)

def rows(run_dir):
    df = pd.read_csv(run_dir/'metrics.csv')
    return (df.dropna(subset=['train_loss'])[['iter', 'train_loss', 'grad_norm']].values.tolist(),
            df.dropna(subset=['val_loss'])[['iter', 'val_loss']].values.tolist())

class Crash(Callback):
    "Raise inside the micro-batch loop of iteration `it` (after `micro` backward passes): a crash mid-step."
    def __init__(self, it, micro): self.it, self.micro, self.n = it, micro, 0
    def on_after_backward(self, t):
        if t.iter == self.it:
            self.n += 1
            if self.n == self.micro: raise KeyboardInterrupt('simulated crash')

@pytest.mark.parametrize('crash_at', [(6, 1), (8, 2)])    # inside an accumulation cycle; right after an eval
def test_resume_after_a_crash_is_bitwise_exact(data, tmp_path, crash_at):
    cfg = small(grad_accum=2, ckpt_interval=1)
    make(data, cfg, tmp_path/'full').fit()
    with pytest.raises(KeyboardInterrupt): make(data, cfg, tmp_path/'crash', [Crash(*crash_at)]).fit()
    assert load_checkpoint(tmp_path/'crash'/'ckpt.pt')['iter'] == crash_at[0]
    t = make(data, cfg, tmp_path/'crash')
    random.seed(123); torch.manual_seed(123); np.random.seed(123)      # a new process would have other RNG states
    t.load_state_dict(load_checkpoint(tmp_path/'crash'/'ckpt.pt'))
    t.fit()
    (a_tr, a_val), (b_tr, b_val) = rows(tmp_path/'full'), rows(tmp_path/'crash')
    assert len(a_tr) == 12 and a_tr == b_tr and a_val == b_val       # == on floats: bitwise
    wa, wb = (load_checkpoint(tmp_path/r/'ckpt.pt')['model'] for r in ('full', 'crash'))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)

class GradCapture(Callback):
    def on_after_backward(self, t): self.grads = [p.grad.clone() for p in t.raw_model.parameters()]

class Fixed:
    def __init__(self, batches): self.batches, self.i = batches, 0
    def __next__(self): b = self.batches[self.i % len(self.batches)]; self.i += 1; return b
    def state_dict(self): return {'i': self.i}
    def load_state_dict(self, d): self.i = d['i']

def test_accumulation_equals_the_big_batch_with_ignored_targets(data):
    x, y = next(RandomWindows(data.train, 16, 12, seed=3))
    y = y.clone(); y[0, :15] = -1; y[1] = -1; y[4, 2:] = -1; y[9, :7] = -1
    def grads(accum):
        cfg = small(batch_size=12 // accum, grad_accum=accum, dropout=0.0)
        set_seed(0); cap = GradCapture()
        mb = 12 // accum
        t = Trainer(create_model(cfg, data.tokenizer.vocab_size), Fixed([(x[i:i + mb], y[i:i + mb]) for i in range(0, 12, mb)]),
                    [], cfg, callbacks=[cap])
        loss = t.train_step()
        return cap.grads, loss
    (g1, l1), (g3, l3), (g6, l6) = grads(1), grads(3), grads(6)
    for g in (g3, g6):
        assert max(((a - b).abs().max() / a.abs().max()).item() for a, b in zip(g1, g)) < 1e-5
    assert abs(l1.item() - l3.item()) < 1e-6 and abs(l1.item() - l6.item()) < 1e-6

class PoisonAt(Callback):
    def __init__(self, it): self.it = it
    def on_before_backward(self, t, loss):
        if t.iter == self.it: loss.data.fill_(float('inf'))

def test_nan_guard_skip_keeps_weights_and_counts(data):
    t = make(data, small(nan_policy='skip', log_interval=12, eval_interval=100, dropout=0.0), callbacks=[PoisonAt(5)])
    before = {}
    class Snap(Callback):
        def on_step_start(self, tr):
            if tr.iter == 5: before.update({k: v.clone() for k, v in tr.raw_model.state_dict().items()})
        def on_step_end(self, tr, loss):
            if tr.iter == 6: assert all(torch.equal(before[k], v) for k, v in tr.raw_model.state_dict().items())
    t.callbacks.append(Snap())
    t.fit()
    assert t.history[0]['skipped_steps'] == 1 and t.iter == 12
    assert all(torch.isfinite(p).all() for p in t.raw_model.parameters())

def test_nan_guard_stop_raises_a_named_error(data):
    t = make(data, small(log_interval=3, eval_interval=100), callbacks=[PoisonAt(4)])
    with pytest.raises(NonFiniteError, match='nan_policy=skip'): t.fit()
    assert t.iter == 6 and all(torch.isfinite(p).all() for p in t.raw_model.parameters())

def test_early_stopping(data):
    t = make(data, small(max_iters=40, eval_interval=4, early_stop_patience=2, early_stop_min_delta=100.0))
    t.fit()
    assert t.iter == 12            # eval 4 improves (from inf); evals 8 and 12 do not by > 100: stop

def test_checkpoints_keep_last_and_best(data, tmp_path):
    t = make(data, small(keep_last=2, max_iters=12, eval_interval=4), tmp_path/'r')
    t.fit()
    names = sorted(p.name for p in (tmp_path/'r').glob('*.pt'))
    assert names == ['best.pt', 'ckpt-0000008.pt', 'ckpt-0000012.pt', 'ckpt.pt']
    best = load_checkpoint(tmp_path/'r'/'best.pt')
    assert best['best_val'] == t.best_val == min(v for _, v in rows(tmp_path/'r')[1])

def test_a_checkpoint_write_killed_midway_leaves_the_previous_one(data, tmp_path, monkeypatch):
    t = make(data, small(max_iters=4, eval_interval=4), tmp_path/'r'); t.fit()
    good = load_checkpoint(tmp_path/'r'/'ckpt.pt')
    def dying_save(obj, f):
        with open(f, 'wb') as fh: fh.write(b'PK\x03\x04 partial')
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(training.torch, 'save', dying_save)
    with pytest.raises(OSError): t.save()
    again = load_checkpoint(tmp_path/'r'/'ckpt.pt')
    assert again['iter'] == good['iter'] == 4
    assert [p.name for p in (tmp_path/'r').iterdir() if p.name.endswith('.tmp')] == []

def test_checkpoint_from_another_config_names_the_difference(data, tmp_path):
    t = make(data, small(max_iters=4, eval_interval=4), tmp_path/'r'); t.fit()
    other = make(data, small(n_embd=64))
    with pytest.raises(CheckpointError, match="n_embd"): other.load_state_dict(load_checkpoint(tmp_path/'r'/'ckpt.pt'))

def test_csv_and_tensorboard_logs_are_readable_by_pandas(data, tmp_path):
    t = make(data, small(tensorboard=True), tmp_path/'r'); t.fit()
    csv_df = pd.read_csv(tmp_path/'r'/'metrics.csv')
    tb = read_tensorboard(tmp_path/'r'/'tb')
    assert {'train_loss', 'val_loss', 'lr', 'grad_norm', 'tokens_per_s', 'mfu'} <= set(tb.columns)
    tr = csv_df.dropna(subset=['train_loss']).set_index('iter')['train_loss']
    assert np.allclose(tb['train_loss'].dropna().loc[tr.index].values, tr.values, rtol=1e-6)
    assert (csv_df['mfu'].dropna() > 0).all()

def test_compile_matches_eager(data):
    cfg = small(dropout=0.0, max_iters=4, eval_interval=100)
    eager = [make(data, cfg).train_step().item() for _ in range(1)]
    te, tc = make(data, cfg), make(data, small(dropout=0.0, max_iters=4, eval_interval=100, compile=True))
    le = [te.train_step().item() for _ in range(4)]
    lc = [tc.train_step().item() for _ in range(4)]
    assert np.allclose(le, lc, rtol=1e-4, atol=1e-5), (le, lc)

def test_the_seed_cnn_trains_through_the_same_trainer():
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.nn.functional.interpolate(torch.tensor(d.images, dtype=torch.float32)[:, None] / 16, size=28)
    y = torch.tensor(d.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))   # a shuffled 1500 / 297 split
    x, y = x[perm], y[perm]
    cfg = TrainConfig(max_iters=400, batch_size=32, lr=1e-3, min_lr=1e-3, weight_decay=0.0, beta2=0.999,
                      warmup_iters=0, schedule='constant', log_interval=50, eval_interval=400, eval_iters=1,
                      progress=False, device='cpu', precision='fp32')
    set_seed(0)
    t = Trainer(SeedCNN(), ResidentBatches(x[:1500], y[:1500], 32), [(x[1500:], y[1500:])], cfg)
    t.fit()
    acc = (t.raw_model.eval()(x[1500:])[0].argmax(-1) == y[1500:]).float().mean().item()
    assert acc > 0.95 and t.history[-1]["val_loss"] < 0.25

def test_a_stale_low_peak_is_measured_again(data, tmp_path, monkeypatch):
    "A peak cached while the machine was busy (here: 1 FLOP/s) would put MFU far above 100%; the monitor measures again."
    from llmtrain.resources import device_name
    import json
    monkeypatch.setenv('LLMTRAIN_CACHE', str(tmp_path/'cache'))
    key = f"{device_name('cpu')}|{torch.float32}|torch {torch.__version__}"
    (tmp_path/'cache').mkdir(); (tmp_path/'cache'/'peak_flops.json').write_text(json.dumps({key: 1.0}))
    t = make(data, small(max_iters=4, eval_interval=100, log_interval=2, precision='fp32'), tmp_path/'r'); t.fit()
    mfu = pd.read_csv(tmp_path/'r'/'metrics.csv')['mfu'].dropna()
    assert len(mfu) and (mfu < 1).all(), mfu.tolist()
    assert json.loads((tmp_path/'cache'/'peak_flops.json').read_text())[key] > 1e8

def test_elapsed_goes_on_across_a_resume(data, tmp_path):
    "A checkpoint carries the seconds spent training: the resumed session's `elapsed_s` starts where the saved clock stopped."
    make(data, small(max_iters=6, eval_interval=6), tmp_path/'r').fit()
    saved = load_checkpoint(tmp_path/'r'/'ckpt.pt')['elapsed_s']
    t = make(data, small(max_iters=12, eval_interval=6), tmp_path/'r')
    t.load_state_dict(load_checkpoint(tmp_path/'r'/'ckpt.pt'))
    assert t.elapsed() == saved > 0                                    # stopped between sessions
    t.fit()
    e = pd.read_csv(tmp_path/'r'/'metrics.csv').set_index('iter')['elapsed_s']
    assert e.loc[7:].min() >= saved and e.is_monotonic_increasing
    assert load_checkpoint(tmp_path/'r'/'ckpt.pt')['elapsed_s'] >= e.max()

def test_muon_trains_and_resumes_bitwise(data, tmp_path):
    "optimizer=muon (Muon on the hidden matrices, AdamW on the rest) lowers the loss, and a crash mid-run resumes exactly."
    cfg = small(optimizer='muon', muon_lr=0.02, lr=3e-3, ckpt_interval=1, dropout=0.0, grad_accum=2)
    t = make(data, cfg, tmp_path/'full'); t.fit()
    assert type(t.opt).__name__ == 'MuonAdamW'
    tr, _ = rows(tmp_path/'full')
    assert tr[-1][1] < tr[0][1] - 0.5, tr
    with pytest.raises(KeyboardInterrupt): make(data, cfg, tmp_path/'crash', [Crash(7, 1)]).fit()
    t = make(data, cfg, tmp_path/'crash')
    random.seed(123); torch.manual_seed(123); np.random.seed(123)
    t.load_state_dict(load_checkpoint(tmp_path/'crash'/'ckpt.pt'))
    assert len(t.opt.muon.state) == len(t.opt.muon.param_groups[0]['params'])     # Muon's momentum came back too
    t.fit()
    (a_tr, a_val), (b_tr, b_val) = rows(tmp_path/'full'), rows(tmp_path/'crash')
    assert len(a_tr) == 12 and a_tr == b_tr and a_val == b_val
    wa, wb = (load_checkpoint(tmp_path/r/'ckpt.pt')['model'] for r in ('full', 'crash'))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
