"""The memory planner guards every run (issue 23): runs that cannot fit stop at once with a named one-line error,
`batch_size=auto` picks the micro-batch and accumulation, and an out-of-memory error in a step leaves the last
checkpoint as it was."""
import os, sys, time, hashlib, subprocess
from pathlib import Path
import pytest, torch, yaml
from conftest import has_shakespeare
from llmtrain.core import load_config
from llmtrain.resources import ResourceError, plan_run
import llmtrain.resources as resources
import llmtrain.training as training

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(n_layer=2, n_head=2, n_embd=32, block_size=32, eval_iters=2, sample_tokens=0, progress=False, precision='fp32',
            warmup_iters=2, log_interval=1)

def run_measured(args, env=None, timeout=120):
    "Run `llmtrain train ARGS` in a fresh process: (returncode, stderr, seconds)."
    t = time.perf_counter()
    p = subprocess.Popen([sys.executable, '-m', 'llmtrain.cli', 'train', *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env={**os.environ, **(env or {})})
    try: out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill(); p.communicate(); pytest.fail(f'llmtrain train {args} ran past {timeout} s')
    return p.returncode, err, time.perf_counter() - t

def peak_rss_mb(args, env=None, timeout=120):
    "Peak resident memory (MB) and exit status of `llmtrain train ARGS` in a fresh process, from the kernel's own accounting (wait4)."
    p = subprocess.Popen([sys.executable, '-m', 'llmtrain.cli', 'train', *args], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    t = time.perf_counter()
    while True:
        pid, status, usage = os.wait4(p.pid, os.WNOHANG)
        if pid: break
        if time.perf_counter() - t > timeout: p.kill(); pytest.fail(f'llmtrain train {args} ran past {timeout} s')
        time.sleep(0.05)
    p.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss / 1024, p.returncode

# the three commands: a huge batch, a model too big for a 6 GB limit, a model too big for any machine here
CASES = [(['batch_size=100000000', 'max_iters=2'], {}, 'The largest micro-batch that fits is'),
         (['n_layer=48', 'n_embd=2048', 'n_head=16'], {'LLMTRAIN_MEMORY_LIMIT': '6GB'}, 'Even micro-batch 1 needs'),
         (['n_layer=200', 'n_embd=8192', 'n_head=64'], {}, 'Even micro-batch 1 needs')]

@pytest.mark.parametrize('args,env,expect', CASES, ids=['batch', '48L-6GB', '200L'])
def test_runs_that_cannot_fit_stop_at_once(tmp_path, args, env, expect):
    args = [*args, f'out_dir={tmp_path}', 'name=r']
    code, err, seconds = run_measured(args, env)
    lines = [l for l in err.splitlines() if l.strip()]
    assert code == 2 and len(lines) == 1, err                       # one line, no traceback
    assert lines[0].startswith('llmtrain train: error: The run does not fit in memory: predicted peak') and expect in lines[0]
    assert 'GiB available on cpu' in lines[0] and 'Traceback' not in err
    assert seconds < 15, seconds                                   # the interpreter's start and imports, then milliseconds
    assert not (tmp_path/'r').exists()                             # nothing written, nothing allocated
    rss, code = peak_rss_mb(args, env)
    assert code == 2 and rss < 1500, rss                           # torch's own import is ~300 MB; the crash it replaces took 1 GB to 24 GB

def imported_modules(importtime_stderr: str) -> set:
    "The modules a `python -X importtime` run imported, from its stderr."
    return {l.rsplit('|', 1)[1].strip() for l in importtime_stderr.splitlines() if l.startswith('import time:') and '|' in l}

@pytest.mark.parametrize('args,env,expect', CASES, ids=['batch', '48L-6GB', '200L'])
def test_runs_that_cannot_fit_stop_before_torch_is_imported(tmp_path, args, env, expect):
    "Once a text run has recorded its corpus's vocabulary, `llmtrain train` checks the plan before it imports torch: the same one line, in a fraction of a second."
    from llmtrain.core import remember_vocab_size, precheck_memory
    from llmtrain.data import prepare_data
    cfg = load_config(overrides=args)
    remember_vocab_size(cfg, prepare_data(cfg).tokenizer.vocab_size)           # what any earlier run on pydoc left in the cache
    args = [*args, f'out_dir={tmp_path}', 'name=r']
    p = subprocess.run([sys.executable, '-X', 'importtime', '-m', 'llmtrain.cli', 'train', *args], capture_output=True, text=True,
                       env={**os.environ, **env}, timeout=120)
    mods = imported_modules(p.stderr)
    lines = [l for l in p.stderr.splitlines() if l.strip() and not l.startswith('import time:')]
    assert p.returncode == 2 and len(lines) == 1 and expect in lines[0], p.stderr[-2000:]
    assert {'llmtrain.core', 'yaml', 'fastcore.script'} <= mods                         # the parse really was seen (-m runs cli as __main__)
    assert not {'torch', 'numpy', 'llmtrain.resources', 'llmtrain.training'} & mods, sorted(mods & {'torch', 'numpy', 'llmtrain.resources'})
    code, err, seconds = run_measured(args, env)
    assert code == 2 and err.strip().split(' against')[0] == lines[0].split(' against')[0] and seconds < 10, seconds   # ~0.2 s on an idle machine (torch's import alone is ~1 s)

@pytest.mark.parametrize('args,env,expect', CASES, ids=['batch', '48L-6GB', '200L'])
def test_the_check_before_torch_is_the_full_check(monkeypatch, args, env, expect):
    "`precheck_memory` (no torch, the shape counted) raises the very message `check_memory` (meta-device models, the device's memory) raises."
    from llmtrain.core import precheck_memory, remember_vocab_size
    monkeypatch.setenv('LLMTRAIN_MEMORY_LIMIT', env.get('LLMTRAIN_MEMORY_LIMIT', '20GiB'))   # the same budget for both
    for extra in ([], ['precision=fp32'], ['precision=bf16', 'dropout=0.1'], ['bias=true', 'tie_weights=false', 'n_kv_head=2'],
                  ['pos_emb=rope', 'norm=rmsnorm', 'optimizer=sgd'], ['block_size=1024', 'precision=bf16']):
        cfg = load_config(overrides=[*args, *extra], device='cpu')
        remember_vocab_size(cfg, 103)
        with pytest.raises(ResourceError) as full: resources.check_memory(cfg, 103, device='cpu')
        with pytest.raises(ResourceError) as early: precheck_memory(cfg)
        assert str(early.value) == str(full.value) and expect in str(early.value), (extra, str(early.value), str(full.value))
    precheck_memory(load_config(overrides=args, device='cpu', mlp='swiglu'))      # not counted without torch: left to the full check
    precheck_memory(load_config(overrides=args, device='cpu', corpus='a-corpus-no-run-has-seen'))   # vocabulary unknown: the same

def test_the_guard_itself_takes_milliseconds(monkeypatch):
    monkeypatch.setenv('LLMTRAIN_MEMORY_LIMIT', '16GB')              # the same answer on any machine
    for kw in (dict(batch_size=100_000_000), dict(n_layer=200, n_embd=8192, n_head=64), dict(n_layer=48, n_embd=2048, n_head=16, pos_emb='rope', norm='rmsnorm', mlp='swiglu')):
        t = time.perf_counter()
        with pytest.raises(ResourceError):
            resources.check_memory(load_config(**kw), 65, device='cpu')
        assert time.perf_counter() - t < 1.0       # milliseconds on an idle machine; a loaded one builds modules slower

def test_the_guard_runs_before_the_model_and_batches(tmp_path, monkeypatch):
    def forbidden(*a, **k): raise AssertionError('allocated before the memory check')
    monkeypatch.setattr(training, 'build_model', forbidden)       # the one builder of a run's model (chapter 2c)
    monkeypatch.setattr(training, 'eval_windows', forbidden)
    with pytest.raises(ResourceError, match='largest micro-batch'):
        training.train(load_config(batch_size=100_000_000, out_dir=str(tmp_path)))
    monkeypatch.setenv('LLMTRAIN_MEMORY_LIMIT', '200MB')
    with pytest.raises(ResourceError, match='images per step'):     # an image classifier goes through the same guard
        training.train(load_config(model='strong_cnn', corpus='digits', batch_size=1_000_000, out_dir=str(tmp_path)))

def test_memory_check_warn_and_off_run_anyway(tmp_path, monkeypatch):
    monkeypatch.setenv('LLMTRAIN_MEMORY_LIMIT', '1MB')
    cfg = load_config(**TINY, batch_size=4, max_iters=2, eval_interval=2, out_dir=str(tmp_path), name='w', memory_check='warn')
    with pytest.warns(UserWarning, match='does not fit in memory'): t = training.train(cfg)
    assert t.iter == 2
    with pytest.raises(ResourceError): training.train(load_config(**TINY, batch_size=4, max_iters=2, out_dir=str(tmp_path)))
    assert training.train(load_config(**TINY, batch_size=4, max_iters=2, eval_interval=2, out_dir=str(tmp_path), name='o',
                                      memory_check='off')).iter == 2

@pytest.mark.skipif(not has_shakespeare(), reason='needs ../shared/data/tinyshakespeare.txt')
def test_auto_on_the_cpu_recipe(tmp_path):
    cfg = load_config(ROOT/'configs'/'shakespeare-char-cpu.yaml', ['batch_size=auto', 'tokens_per_step=768', 'max_iters=3',
                      'eval_iters=2', 'eval_interval=3', 'sample_tokens=0', 'progress=false', f'out_dir={tmp_path}', 'name=a'])
    t = training.train(cfg)
    assert t.iter == 3 and (t.cfg.batch_size, t.cfg.grad_accum) == (12, 1)   # plenty of memory: the recipe's own batch
    saved = yaml.safe_load((tmp_path/'a'/'config.yaml').read_text())
    assert (saved['batch_size'], saved['grad_accum'], saved['tokens_per_step']) == (12, 1, 768)
    assert load_config(tmp_path/'a'/'config.yaml').batch_size == 12  # resume and reproduction read the choice
    m = t.memory_plan
    assert m['measured_first_step'] <= 1.2 * m['expected_first_step']

def test_auto_with_a_small_budget_accumulates_and_matches_the_explicit_setting(tmp_path, monkeypatch):
    base = dict(TINY, max_iters=4, eval_interval=4, lr_decay_iters=4, dropout=0.1, out_dir=str(tmp_path))
    full = plan_run(load_config(**base, batch_size=12), 96, device='cpu', budget=10**15)['peak']
    three = plan_run(load_config(**base, batch_size=3), 96, device='cpu', budget=10**15)['peak']
    monkeypatch.setenv('LLMTRAIN_MEMORY_LIMIT', str(int((three + (full - three) / 9) / 0.9)))   # fits 3 or 4 sequences, not 12
    a = training.train(load_config(**base, batch_size='auto', tokens_per_step=12 * 32, name='auto'))
    b, k = a.cfg.batch_size, a.cfg.grad_accum
    assert b < 12 and k > 1 and b * k == 12
    monkeypatch.delenv('LLMTRAIN_MEMORY_LIMIT')
    e = training.train(load_config(**base, batch_size=b, grad_accum=k, name='explicit'))
    la = [m['train_loss'] for m in a.history if 'train_loss' in m]
    le = [m['train_loss'] for m in e.history if 'train_loss' in m]
    assert len(la) == 4 and max(abs(x - y) for x, y in zip(la, le)) <= 1e-6, (la, le)
    assert yaml.safe_load((tmp_path/'auto'/'config.yaml').read_text())['grad_accum'] == k

def test_auto_backs_off_when_the_measured_step_is_over_the_plan(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(resources.confirm_plan, '__defaults__', (-0.999,))     # every measurement is 'over the plan'
    t = training.train(load_config(**TINY, max_iters=2, eval_interval=2, batch_size='auto', tokens_per_step=8 * 32,
                                   out_dir=str(tmp_path), name='b'))
    assert (t.cfg.batch_size, t.cfg.grad_accum) == (1, 8) and t.iter == 2   # 8 -> 4 -> 2 -> 1, the same step
    out = capsys.readouterr().out
    assert 'backing off to micro-batch 4 x grad_accum 2' in out and 'backing off to micro-batch 1 x grad_accum 8' in out
    assert yaml.safe_load((tmp_path/'b'/'config.yaml').read_text())['batch_size'] == 1

@pytest.mark.parametrize('error', [RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: "
                                                "you tried to allocate 52000000000 bytes. Error code 12 (Cannot allocate memory)"),
                                   torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 20.00 GiB')], ids=['cpu', 'cuda'])
def test_out_of_memory_in_a_step_is_named_and_keeps_the_checkpoint(tmp_path, monkeypatch, error):
    step = training.Trainer.train_step
    seen = {}
    def failing(self):
        if self.iter == 3:
            ck = self.run_dir/'ckpt.pt'
            seen['digest'] = hashlib.sha256(ck.read_bytes()).hexdigest()
            raise error
        return step(self)
    monkeypatch.setattr(training.Trainer, 'train_step', failing)
    cfg = load_config(**TINY, batch_size=4, max_iters=10, eval_interval=100, ckpt_interval=2, out_dir=str(tmp_path), name='oom')
    with pytest.raises(ResourceError) as e: training.train(cfg)
    msg = str(e.value)
    assert 'Out of memory on cpu at iteration 3' in msg and 'batch_size=2 grad_accum=2' in msg and '\n' not in msg
    assert 'ckpt.pt is intact' in msg and f'--resume {tmp_path/"oom"}' in msg
    ck = tmp_path/'oom'/'ckpt.pt'
    assert hashlib.sha256(ck.read_bytes()).hexdigest() == seen['digest']
    assert training.load_checkpoint(ck)['iter'] == 2
    assert not list((tmp_path/'oom').glob('.*.tmp'))

def test_auto_under_torchrun_shares_one_choice_and_matches_one_process(tmp_path, monkeypatch):
    "Two processes on one CPU share its memory (the budget is halved) and train with rank 0's choice, per process: the losses are the one-process run's."
    from test_distributed import COMMON, launch, losses
    cfg = lambda b: load_config(None, COMMON, batch_size=b)
    peak = {b: plan_run(cfg(b), 96, device='cpu', world=2, budget=10**15)['peak'] for b in (2, 4)}
    limit = 2 * (peak[2] + (peak[4] - peak[2]) / 4) / 0.9          # per process: micro-batch 2 fits, 4 does not
    monkeypatch.setenv('LLMTRAIN_MEMORY_LIMIT', str(int(limit)))
    launch(2, 'batch_size=auto', 'tokens_per_step=128', 'name=auto2', tmp=tmp_path)   # 8 sequences of 16 per step
    monkeypatch.delenv('LLMTRAIN_MEMORY_LIMIT')
    saved = yaml.safe_load((tmp_path/'auto2'/'config.yaml').read_text())
    assert (saved['batch_size'], saved['grad_accum']) == (2, 2)     # per process: 2 x 2 x 2 processes = 8
    launch(1, 'batch_size=8', 'name=one', tmp=tmp_path)
    (a, _), (b, _) = losses(tmp_path/'one'), losses(tmp_path/'auto2')
    assert len(a) == len(b) == 20 and max(abs(x - y) for x, y in zip(a, b)) < 1e-5, (a, b)

def test_auto_image_run_is_the_explicit_run(tmp_path):
    "The confirming measurement leaves no trace: batch norm's statistics, dropout's RNG and the sampler are restored."
    base = dict(model='strong_cnn', corpus='digits', max_iters=4, eval_interval=4, log_interval=1, progress=False, precision='fp32',
                dropout=0.25, out_dir=str(tmp_path))
    a = training.train(load_config(**base, batch_size='auto', tokens_per_step=32, name='auto'))
    assert (a.cfg.batch_size, a.cfg.grad_accum) == (32, 1)
    e = training.train(load_config(**base, batch_size=32, name='explicit'))
    assert [m['train_loss'] for m in a.history if 'train_loss' in m] == [m['train_loss'] for m in e.history if 'train_loss' in m]
    assert a.best_val == e.best_val

def test_auto_backs_off_when_the_first_micro_batch_runs_out_of_memory(tmp_path, monkeypatch, capsys):
    real = resources._first_step_peak
    def small_machine(t):
        if t.cfg.batch_size > 2: raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 9 GB")
        return real(t)
    monkeypatch.setattr(resources, '_first_step_peak', small_machine)
    t = training.train(load_config(**TINY, max_iters=2, eval_interval=2, batch_size='auto', tokens_per_step=8 * 32,
                                   out_dir=str(tmp_path), name='m'))
    assert (t.cfg.batch_size, t.cfg.grad_accum) == (2, 4) and t.iter == 2
    assert 'micro-batch of 8 ran out of memory' in capsys.readouterr().out
