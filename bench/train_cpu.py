"""The Trainer against a plain PyTorch loop on this CPU, measured in the same run, interleaved, medians.

    python bench/train_cpu.py                 # throughput parts (about 6 minutes on 2 cores)
    python bench/train_cpu.py --full          # plus the 2000-iteration validation-loss comparisons (~12 more minutes)
    python bench/train_cpu.py --parts overhead,cnn --rounds 3

Parts (ratios > 1 mean the Trainer is faster):
  overhead  Trainer fp32 vs the plain fp32 loop with the same fused AdamW, on nanoGPT's CPU recipe model (4L/128, block 64,
            batch 12): the cost of callbacks, logging, the NaN guard and accumulation bookkeeping. Target: <= 3%.
  best      Trainer with its best settings (fused AdamW, torch.compile, precision=auto) vs the plain loop with
            per-tensor AdamW as nanoGPT runs on CPU. Target: >= 1.15x tokens/s; with --full, same val loss within 0.02.
  wide      6L/384, block 256, batch 8 (nanoGPT's GPU Shakespeare shape): precision=auto vs fp32. Target: >= 2x.
            Dropout 0 by default (--wide-dropout 0.2 for nanoGPT's GPU config: generating and applying its masks
            costs about the same in both precisions, so the ratio is lower: 1.75x measured).
  precision the CPU recipe model through the Trainer in fp32 and in bf16 autocast (both forced), same run, interleaved:
            the ratio that `precision=auto`'s quick check decides on (issue #7 asks for it in BENCHMARKS.md).
  cnn       the seed's CNN on Fashion-MNIST, batch 32, Adam: Trainer (precision=auto) vs a plain loop.
Results go to --out as JSON and a table is printed last."""
import argparse, json, math, statistics, sys, tempfile, time
from pathlib import Path
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from llmtrain.core import TrainConfig, set_seed
from llmtrain.data import load_corpus, encode_corpus, RandomWindows, ResidentBatches, eval_windows, load_fashion_mnist
from llmtrain.models import create_model, SeedCNN
from llmtrain.optim import param_groups
from llmtrain.training import Trainer, lr_at
from llmtrain.resources import autocast_ctx

CPU_RECIPE = dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, dropout=0.0, lr=1e-3, min_lr=1e-4,
                  warmup_iters=100, beta1=0.9, beta2=0.99, weight_decay=0.1, grad_clip=1.0, tie_weights=False)
WIDE = dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=8, dropout=0.0, lr=1e-3, min_lr=1e-4,
            warmup_iters=100, beta1=0.9, beta2=0.99, weight_decay=0.1, grad_clip=1.0)

def corpus():
    try: return 'tinyshakespeare', encode_corpus(load_corpus('tinyshakespeare'))
    except Exception: return 'pydoc', encode_corpus(load_corpus('pydoc'))

class PlainLoop:
    "The reference: nanoGPT's loop in plain PyTorch (same model, data, schedule and clipping; no callbacks, no logs)."
    def __init__(self, cfg, model, batches, fused, precision='fp32', log_interval=10):
        self.cfg, self.model, self.batches, self.precision = cfg, model, batches, precision
        kw = dict(fused=True) if fused else dict(foreach=False)
        self.opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), **kw)
        self.it, self.log_interval = 0, log_interval
    def run(self, n):
        model, opt, cfg = self.model, self.opt, self.cfg
        for _ in range(n):
            for g in opt.param_groups: g['lr'] = lr_at(self.it, cfg)
            x, y = next(self.batches)
            with autocast_ctx(self.precision, torch.device('cpu')): loss = model(x, y)[1]
            loss.backward()
            if cfg.grad_clip: torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step(); opt.zero_grad(set_to_none=True)
            self.it += 1
            if self.it % self.log_interval == 0: loss.item()
        return self

class TrainerRun:
    """The Trainer stepping `n` iterations at a time through `fit` (its real loop, callbacks and logs included).
    Each `fit` ends with an evaluation and a checkpoint, which a real run does every `eval_interval` steps, not every
    round of a benchmark: so the time of a round is what the Trainer itself measures for its steps (`ms_per_iter` of
    its log rows, which excludes evaluation and checkpoint time)."""
    def __init__(self, cfg, model, batches, evals, run_dir):
        self.t = Trainer(model, batches, evals, cfg, run_dir=run_dir)
    def run(self, n):
        self.t.cfg.max_iters = self.t.iter + n
        start = len(self.t.history)
        self.t.fit()
        rows, prev, ms = [m for m in self.t.history[start:] if 'ms_per_iter' in m], self.t.iter - n, 0.0
        for m in rows: ms += m['ms_per_iter'] * (m['iter'] - prev); prev = m['iter']
        self.last_s_per_iter = ms / 1000 / n
        return self

def timed(runner, n):
    t = time.perf_counter(); runner.run(n)
    return getattr(runner, 'last_s_per_iter', None) or (time.perf_counter() - t) / n

def interleave(runners, warm, n, rounds):
    "Median seconds per iteration of each runner, measured in alternating rounds."
    for r in runners.values(): r.run(warm)
    times = {k: [] for k in runners}
    for _ in range(rounds):
        for k, r in runners.items(): times[k].append(timed(r, n))
    return {k: statistics.median(v) for k, v in times.items()}, times

def lm(cfg_kw, data, **over):
    cfg = TrainConfig(**{**cfg_kw, 'max_iters': 2000, 'lr_decay_iters': 2000, 'eval_interval': 10**6, 'eval_iters': 1,
                         'log_interval': 10, 'progress': False, 'sample_tokens': 0, 'device': 'cpu', **over})
    set_seed(0)
    model = create_model(cfg, data.tokenizer.vocab_size)
    return cfg, model, RandomWindows(data.train, cfg.block_size, cfg.batch_size, seed=0)

def val_loss(model, data, block, batch, precision='fp32', n=200):
    model.eval(); tot = 0.0
    with torch.no_grad():
        for x, y in eval_windows(data.val, block, batch, n, seed=1):
            with autocast_ctx(precision, torch.device('cpu')): tot += model(x, y)[1].item()
    model.train(); return tot / n

def part_overhead(data, a, tmp):
    c1, m1, b1 = lm(CPU_RECIPE, data, precision='fp32'); c2, m2, b2 = lm(CPU_RECIPE, data, precision='fp32')
    med, raw = interleave({'plain': PlainLoop(c1, m1, b1, fused=True), 'trainer': TrainerRun(c2, m2, b2, [], tmp/'o')},
                          warm=50, n=a.n, rounds=a.rounds)
    return dict(ms_plain=med['plain'] * 1e3, ms_trainer=med['trainer'] * 1e3, overhead=med['trainer'] / med['plain'] - 1,
                raw_ms={k: [x * 1e3 for x in v] for k, v in raw.items()}, target='overhead <= 0.03')

def part_best(data, a, tmp):
    c1, m1, b1 = lm(CPU_RECIPE, data, precision='fp32'); c2, m2, b2 = lm(CPU_RECIPE, data, precision='auto', compile=True)
    plain, best = PlainLoop(c1, m1, b1, fused=False), TrainerRun(c2, m2, b2, [], tmp/'b')
    t = time.perf_counter(); best.run(5); compile_s = time.perf_counter() - t
    med, raw = interleave({'plain_per_tensor': plain, 'trainer_best': best}, warm=20, n=a.n, rounds=a.rounds)
    r = dict(ms_plain_per_tensor=med['plain_per_tensor'] * 1e3, ms_trainer_best=med['trainer_best'] * 1e3,
             speedup=med['plain_per_tensor'] / med['trainer_best'], trainer_precision=best.t.precision,
             precision_check_ms={k: v * 1e3 for k, v in best.t.precision_check.items()}, first_steps_s=compile_s,
             raw_ms={k: [x * 1e3 for x in v] for k, v in raw.items()}, target='speedup >= 1.15')
    if a.full:
        for runner in (plain, best):
            left = 2000 - (runner.it if runner is plain else runner.t.iter)
            runner.run(left)
        r['val_plain'] = val_loss(plain.model, data, 64, 12)
        r['val_trainer'] = val_loss(best.t.raw_model, data, 64, 12, best.t.precision)
        r['val_diff'] = r['val_trainer'] - r['val_plain']
    return r

def part_wide(data, a, tmp):
    c1, m1, b1 = lm(WIDE, data, precision='fp32', dropout=a.wide_dropout)
    c2, m2, b2 = lm(WIDE, data, precision='auto', dropout=a.wide_dropout)
    fp32, auto = TrainerRun(c1, m1, b1, [], tmp/'w1'), TrainerRun(c2, m2, b2, [], tmp/'w2')
    med, raw = interleave({'fp32': fp32, 'auto': auto}, warm=2, n=max(3, a.n // 20), rounds=a.rounds)
    r = dict(ms_fp32=med['fp32'] * 1e3, ms_auto=med['auto'] * 1e3, speedup=med['fp32'] / med['auto'],
             dropout=a.wide_dropout, auto_precision=auto.t.precision, precision_check_ms={k: v * 1e3 for k, v in auto.t.precision_check.items()},
             raw_ms={k: [x * 1e3 for x in v] for k, v in raw.items()}, target='speedup >= 2')
    if a.full:
        for runner in (fp32, auto): runner.run(a.wide_steps - runner.t.iter)
        r['steps'] = a.wide_steps
        r['val_fp32'] = val_loss(fp32.t.raw_model, data, 256, 8, 'fp32', n=50)
        r['val_auto'] = val_loss(auto.t.raw_model, data, 256, 8, auto.t.precision, n=50)
        r['val_diff'] = r['val_auto'] - r['val_fp32']
    return r

def part_precision(data, a, tmp):
    c1, m1, b1 = lm(CPU_RECIPE, data, precision='fp32'); c2, m2, b2 = lm(CPU_RECIPE, data, precision='bf16')
    med, raw = interleave({'fp32': TrainerRun(c1, m1, b1, [], tmp/'p1'), 'bf16': TrainerRun(c2, m2, b2, [], tmp/'p2')},
                          warm=20, n=a.n, rounds=a.rounds)
    tok = CPU_RECIPE['block_size'] * CPU_RECIPE['batch_size']
    return dict(ms_fp32=med['fp32'] * 1e3, ms_bf16=med['bf16'] * 1e3, tok_s_fp32=tok / med['fp32'], tok_s_bf16=tok / med['bf16'],
                bf16_over_fp32=med['fp32'] / med['bf16'], raw_ms={k: [x * 1e3 for x in v] for k, v in raw.items()})

class PlainCNN:
    def __init__(self, model, batches):
        self.model, self.batches = model, batches
        self.opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        self.it = 0
    def run(self, n):
        for _ in range(n):
            x, y = next(self.batches)
            loss = F.cross_entropy(self.model(x)[0], y)
            loss.backward(); self.opt.step(); self.opt.zero_grad(set_to_none=True)
            self.it += 1
            if self.it % 100 == 0: loss.item()
        return self

def part_cnn(data, a, tmp):
    try: x, y = load_fashion_mnist('train'); src = 'fashion-mnist'
    except Exception:
        x, y = torch.rand(60000, 1, 28, 28), torch.randint(0, 10, (60000,)); src = 'synthetic'
    cfg = TrainConfig(max_iters=10**6, batch_size=32, lr=1e-3, min_lr=1e-3, weight_decay=0.0, beta2=0.999, grad_clip=0.0,
                      warmup_iters=0, schedule='constant', log_interval=100, eval_interval=10**6, eval_iters=1,
                      progress=False, device='cpu', precision='auto')
    set_seed(0); m1 = SeedCNN(); set_seed(0); m2 = SeedCNN()
    plain = PlainCNN(m1, ResidentBatches(x, y, 32, seed=0))
    tr = TrainerRun(cfg, m2, ResidentBatches(x, y, 32, seed=0), [], tmp/'c')
    med, raw = interleave({'plain': plain, 'trainer': tr}, warm=50, n=a.n * 3, rounds=a.rounds)
    steps_per_epoch = len(x) // 32
    return dict(source=src, ms_plain=med['plain'] * 1e3, ms_trainer=med['trainer'] * 1e3,
                speedup=med['plain'] / med['trainer'], trainer_precision=tr.t.precision,
                precision_check_ms={k: v * 1e3 for k, v in tr.t.precision_check.items()},
                s_per_epoch_plain=med['plain'] * steps_per_epoch, s_per_epoch_trainer=med['trainer'] * steps_per_epoch,
                raw_ms={k: [x * 1e3 for x in v] for k, v in raw.items()})

PARTS = dict(overhead=part_overhead, best=part_best, wide=part_wide, precision=part_precision, cnn=part_cnn)

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--parts', default='overhead,best,wide,precision,cnn'); ap.add_argument('--rounds', type=int, default=5)
    ap.add_argument('--n', type=int, default=100, help='iterations per timed round (CPU recipe model)')
    ap.add_argument('--full', action='store_true'); ap.add_argument('--wide-steps', type=int, default=200)
    ap.add_argument('--wide-dropout', type=float, default=0.0, help="dropout of the wide model (nanoGPT's GPU config: 0.2)")
    ap.add_argument('--out', default='bench/out/train_cpu.json')
    a = ap.parse_args()
    name, data = corpus()
    res = dict(corpus=name, torch=torch.__version__, threads=torch.get_num_threads(), args=vars(a))
    with tempfile.TemporaryDirectory() as d:
        for p in a.parts.split(','):
            t = time.perf_counter()
            res[p] = PARTS[p](data, a, Path(d)); res[p]['wall_s'] = time.perf_counter() - t
            print(p, json.dumps(res[p], default=str), flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True); Path(a.out).write_text(json.dumps(res, indent=1, default=str))
    print(f"\n== bench/train_cpu.py ({name}, torch {res['torch']}, {res['threads']} threads, {a.rounds} rounds) ==")
    if 'overhead' in res: r = res['overhead']; print(f"overhead  plain fused fp32 {r['ms_plain']:.1f} ms/it, Trainer fp32 {r['ms_trainer']:.1f} ms/it: overhead {r['overhead']:+.1%} (target <= +3%)")
    if 'best' in res:
        r = res['best']; print(f"best      plain per-tensor AdamW {r['ms_plain_per_tensor']:.1f} ms/it, Trainer best ({r['trainer_precision']}, compiled) {r['ms_trainer_best']:.1f} ms/it: {r['speedup']:.2f}x (target >= 1.15x)")
        if 'val_diff' in r: print(f"          val loss after 2000 it: plain {r['val_plain']:.4f}, Trainer {r['val_trainer']:.4f} (diff {r['val_diff']:+.4f})")
    if 'wide' in res:
        r = res['wide']; print(f"wide      (dropout {r['dropout']}) fp32 {r['ms_fp32']:.0f} ms/it, auto ({r['auto_precision']}) {r['ms_auto']:.0f} ms/it: {r['speedup']:.2f}x (target >= 2x)")
        if 'val_diff' in r: print(f"          val loss after {r['steps']} it: fp32 {r['val_fp32']:.4f}, auto {r['val_auto']:.4f} (diff {r['val_diff']:+.4f})")
    if 'precision' in res: r = res['precision']; print(f"precision CPU recipe model, Trainer: fp32 {r['tok_s_fp32']:,.0f} tok/s ({r['ms_fp32']:.1f} ms/it), bf16 {r['tok_s_bf16']:,.0f} tok/s ({r['ms_bf16']:.1f} ms/it): bf16/fp32 = {r['bf16_over_fp32']:.2f}x")
    if 'cnn' in res: r = res['cnn']; print(f"cnn       plain {r['ms_plain']:.2f} ms/it ({r['s_per_epoch_plain']:.0f} s/epoch), Trainer ({r['trainer_precision']}) {r['ms_trainer']:.2f} ms/it ({r['s_per_epoch_trainer']:.0f} s/epoch): {r['speedup']:.2f}x [{r['source']}]")

if __name__ == '__main__':
    main()
