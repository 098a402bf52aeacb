"""The library on one GPU, in one short run: measured ceilings, GPT-2 124M training through the Trainer (bf16,
flash SDPA, fused AdamW, eager and compiled, micro-batch from the memory planner), the seed's CNN with the data
resident on the device, generation with and without the KV cache and with the cache's step compiled (CUDA graphs), and the memory planner against the allocator's
peak (`torch.cuda.max_memory_allocated`) for every model family (bench/memory_cpu.py's FAMILIES).

    PYTHONPATH=. python bench/gpu.py                      # on a GPU machine (about 3-5 minutes)
    PYTHONPATH=. python bench/gpu.py --device cpu --smoke # the same code paths on a CPU, under a minute

Prints a table last; the full results go to --out (JSON). Needs only torch, numpy and pyyaml besides llmtrain."""
import argparse, json, math, os, platform, statistics, sys, time, traceback
from dataclasses import replace
from pathlib import Path
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from llmtrain.core import TrainConfig, set_seed
from llmtrain.data import RandomWindows, ResidentBatches, eval_windows, load_fashion_mnist
from llmtrain.models import GPT, GPTConfig, SeedCNN, create_model, flops_per_token, num_params
from llmtrain.generation import generate_ids
from llmtrain.resources import device_budget, gpt_memory, measure_matmul_flops, mfu, plan_batch
from llmtrain.training import Trainer, resolve_device, resolve_precision
from bench.memory_cpu import FAMILIES, families

def sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize(dev)

def copy_bandwidth(dev, nbytes):
    "Device-to-device copy GB/s, counting bytes read plus bytes written."
    x = torch.empty(nbytes // 4, dtype=torch.float32, device=dev).uniform_()
    y = torch.empty_like(x)
    for _ in range(3): y.copy_(x)
    sync(dev); t = time.perf_counter(); n = 10
    for _ in range(n): y.copy_(x)
    sync(dev)
    return 2 * nbytes * n / (time.perf_counter() - t) / 1e9

def gpt_cfg(smoke):
    if smoke: return GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=128, vocab_size=512, bias=True)
    return GPTConfig(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50257, bias=True)

def train_cfg(c, **kw):
    return TrainConfig(n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd, block_size=c.block_size, bias=c.bias,
                       dropout=0.0, lr=6e-4, min_lr=6e-5, warmup_iters=2, weight_decay=0.1, beta2=0.95,
                       eval_iters=1, progress=False, sample_tokens=0, **kw)

def correctness(c, dev, tokens, steps, batch):
    "First training losses in bf16 autocast against an fp32 reference (TF32 off), from the same init and batches."
    out = {}
    for prec in ('fp32', 'bf16'):
        set_seed(0)
        if dev.type == 'cuda': torch.backends.cuda.matmul.allow_tf32 = False
        cfg = train_cfg(c, max_iters=steps, batch_size=batch, device=str(dev), precision=prec, log_interval=1,
                        eval_interval=10**6)
        t = Trainer(create_model(cfg, c.vocab_size), RandomWindows(tokens, c.block_size, batch, seed=1, device=dev),
                    [], cfg)
        out[prec] = [t.train_step().item() for _ in range(steps)]
        del t
    if dev.type == 'cuda': torch.backends.cuda.matmul.allow_tf32 = True
    rel = max(abs(a - b) / abs(a) for a, b in zip(out['fp32'], out['bf16']))
    finite = all(math.isfinite(v) for v in out['fp32'] + out['bf16'])
    return dict(losses_fp32=out['fp32'], losses_bf16=out['bf16'], max_rel_diff=rel, finite=finite,
                ok=finite and rel < 2e-2)

def flash_check(c, dev):
    "Run a bf16 forward+backward with SDPA restricted to the FlashAttention backend (raises if it cannot be used)."
    if dev.type != 'cuda': return 'n/a (cpu)'
    from torch.nn.attention import sdpa_kernel, SDPBackend
    m = GPT(replace(c, n_layer=1)).to(dev)
    x = torch.randint(0, c.vocab_size, (2, c.block_size), device=dev)
    try:
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]), torch.autocast('cuda', dtype=torch.bfloat16):
            m(x, x)[1].backward()
        return 'flash'
    except RuntimeError as e: return f'flash unavailable: {str(e)[:120]}'

def train_throughput(c, dev, tokens, batch, steps, warm, compile, peak, log_every):
    "Trainer tokens/s (median over logged intervals after warm-up), MFU and peak memory."
    set_seed(0)
    cfg = train_cfg(c, max_iters=warm + steps, batch_size=batch, device=str(dev), precision='auto', compile=compile,
                    log_interval=log_every, eval_interval=10**6)
    model = create_model(cfg, c.vocab_size)
    t = Trainer(model, RandomWindows(tokens, c.block_size, batch, seed=1, device=dev),
                eval_windows(tokens, c.block_size, batch, 1, device=dev), cfg)
    if dev.type == 'cuda': torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    ctx = _flash_ctx(dev)
    with ctx: t.fit()
    wall = time.perf_counter() - t0
    logs = [m for m in t.history if 'train_loss' in m and m['iter'] > warm]
    tps = statistics.median(m['tokens_per_s'] for m in logs)
    fpt = flops_per_token(t.raw_model)
    r = dict(compile=compile, precision=t.precision, micro_batch=batch, tokens_per_step=batch * c.block_size,
             tokens_per_s=tps, ms_per_iter=statistics.median(m['ms_per_iter'] for m in logs),
             mfu=mfu(tps, fpt, peak), flops_per_token=fpt, wall_s=wall, final_loss=logs[-1]['train_loss'])
    if dev.type == 'cuda': r['peak_bytes'] = torch.cuda.max_memory_allocated(dev)
    del t, model
    if dev.type == 'cuda': torch.cuda.empty_cache()
    return r

def _flash_ctx(dev):
    import contextlib
    if dev.type != 'cuda': return contextlib.nullcontext()
    from torch.nn.attention import sdpa_kernel, SDPBackend
    return sdpa_kernel([SDPBackend.FLASH_ATTENTION])

def cnn_epoch(dev, smoke):
    "Seconds per epoch of the seed's CNN (batch 32, Adam) with the whole dataset resident on the device."
    try:
        x, y = load_fashion_mnist('train'); xt, yt = load_fashion_mnist('test'); source = 'fashion-mnist'
    except Exception:
        g = torch.Generator().manual_seed(0)
        x, y = torch.rand(60000, 1, 28, 28, generator=g), torch.randint(0, 10, (60000,), generator=g)
        xt, yt = x[:10000], y[:10000]; source = 'synthetic (fashion-mnist not found)'
    if smoke: x, y, xt, yt = x[:4096], y[:4096], xt[:1024], yt[:1024]
    x, y, xt, yt = (t.to(dev) for t in (x, y, xt, yt))
    batches = ResidentBatches(x, y, 32, seed=0)
    epoch = len(batches)
    set_seed(0)
    cfg = TrainConfig(max_iters=2 * epoch, batch_size=32, device=str(dev), precision='fp32', lr=1e-3, min_lr=1e-3,
                      weight_decay=0.0, beta2=0.999, grad_clip=0.0, warmup_iters=0, schedule='constant',
                      log_interval=epoch, eval_interval=10**6, eval_iters=1, progress=False)
    t = Trainer(SeedCNN(), batches, [(xt[:1000], yt[:1000])], cfg)
    t.fit()
    logs = [m for m in t.history if 'train_loss' in m]
    with torch.no_grad():
        t.model.eval()
        correct = sum((t.model(xt[i:i + 1000])[0].argmax(-1) == yt[i:i + 1000]).sum() for i in range(0, len(xt), 1000))
    return dict(source=source, samples=len(x), batch_size=32, epochs=2, s_per_epoch_first=logs[0]['ms_per_iter'] * epoch / 1000,
                s_per_epoch=logs[-1]['ms_per_iter'] * epoch / 1000, test_acc=float(correct) / len(xt))

def generation(c, dev, n_new):
    """Tokens/s generating `n_new` tokens (batch 1, greedy) without the KV cache, with it, and with it and compile=True
    (a static cache; on a GPU the one-token step is a CUDA graph, torch.compile mode='reduce-overhead'). Target for the
    compiled step on GPT-2 124M: >= 10x the 22 tokens/s the eager cache gave (2026-11-28)."""
    set_seed(0)
    m = GPT(c).to(dev).eval()
    if dev.type == 'cuda': m = m.to(torch.bfloat16)
    prompt = torch.randint(0, c.vocab_size, (1, 1), device=dev)
    out, seqs = {}, {}
    ways = dict(with_cache={}, without_cache=dict(use_cache=False), with_cache_compiled=dict(compile=True))
    for key, kw in ways.items():
        t = time.perf_counter()
        generate_ids(m, prompt, 8, temperature=0, **kw)                     # warm-up (the compile, the graph capture)
        sync(dev); out[f'warmup_s_{key}'] = time.perf_counter() - t
        t = time.perf_counter()
        seqs[key] = generate_ids(m, prompt, n_new, temperature=0, **kw)
        sync(dev); out[key] = n_new / (time.perf_counter() - t)
    out['speedup'] = out['with_cache'] / out['without_cache']
    out['compiled_speedup'] = out['with_cache_compiled'] / out['with_cache']
    out['same_greedy_tokens'] = bool(torch.equal(seqs['with_cache'], seqs['without_cache']))
    out['same_greedy_tokens_compiled'] = bool(torch.equal(seqs['with_cache_compiled'], seqs['with_cache']))
    out['new_tokens'] = n_new
    return out

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--device', default='auto'); ap.add_argument('--smoke', action='store_true')
    ap.add_argument('--out', default='bench/out/gpu.json')
    ap.add_argument('--max-micro-batch', type=int, default=64)
    a = ap.parse_args()
    dev = resolve_device(a.device)
    res = dict(device=str(dev), gpu=torch.cuda.get_device_name(dev) if dev.type == 'cuda' else None,
               torch=torch.__version__, python=platform.python_version(), smoke=a.smoke,
               cuda=torch.version.cuda, precision=resolve_precision('auto', dev))
    t_start = time.perf_counter()
    if dev.type == 'cuda': torch.backends.cuda.matmul.allow_tf32 = True; torch.backends.cudnn.allow_tf32 = True
    c = gpt_cfg(a.smoke)
    mm_dtype = torch.bfloat16 if res['precision'] == 'bf16' else torch.float32
    res['matmul_tflops'] = measure_matmul_flops(dev, mm_dtype, n=256 if a.smoke else None) / 1e12
    res['copy_gbps'] = copy_bandwidth(dev, 2**24 if a.smoke else 2**32)
    peak = res['matmul_tflops'] * 1e12
    tokens = torch.randint(0, c.vocab_size, (2_000_000 if not a.smoke else 50_000,), dtype=torch.int32,
                           generator=torch.Generator().manual_seed(0))
    steps = dict(warm=2, steps=4, log=2) if a.smoke else dict(warm=10, steps=30, log=5)
    sections = [
        ('correctness', lambda: correctness(c, dev, tokens, 3, 2 if a.smoke else 4)),
        ('sdpa_backend', lambda: flash_check(c, dev)),
    ]
    for name, fn in sections:
        try: res[name] = fn()
        except Exception as e: res[name] = dict(error=f'{type(e).__name__}: {e}'); traceback.print_exc()
        print(name, res[name], flush=True)
    # the memory planner picks the micro-batch; its prediction is checked against the allocator's peak
    budget = int(0.6 * device_budget(dev)) if dev.type == 'cuda' else 2**30
    plan = plan_batch(c, budget, res['precision'] if res['precision'] != 'fp32' else 'fp32',
                      max_micro_batch=4 if a.smoke else a.max_micro_batch)
    res['plan'] = dict(plan, budget=budget)
    runs = []
    for compile in (False, True):
        b = plan['micro_batch']
        while True:
            try:
                r = train_throughput(c, dev, tokens, b, steps['steps'], steps['warm'], compile, peak, steps['log'])
                prec = 'fp32' if r['precision'] == 'fp32' else 'bf16'
                r['predicted_peak_bytes'] = gpt_memory(c, b, prec)['peak']
                runs.append(r); print('train', r, flush=True); break
            except torch.OutOfMemoryError:
                print(f'OOM at micro-batch {b}; halving', flush=True); torch.cuda.empty_cache(); b //= 2
                if b == 0: break
            except Exception as e:
                runs.append(dict(compile=compile, error=f'{type(e).__name__}: {e}')); traceback.print_exc(); break
    res['train'] = runs
    planner = lambda: families(dev, FAMILIES[::6] if a.smoke else FAMILIES)    # predicted vs measured peak per model family
    for name, fn in [('cnn', lambda: cnn_epoch(dev, a.smoke)), ('generation', lambda: generation(c, dev, 32 if a.smoke else 256)),
                     ('planner', planner)]:
        try: res[name] = fn()
        except Exception as e: res[name] = dict(error=f'{type(e).__name__}: {e}'); traceback.print_exc()
        print(name, res[name], flush=True)
    res['total_s'] = time.perf_counter() - t_start
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1, default=str))
    print_table(res)
    return res

def print_table(r):
    print(f"\n== llmtrain bench/gpu.py on {r['gpu'] or r['device']} (torch {r['torch']}, {'smoke' if r['smoke'] else 'full'}) ==")
    print(f"matmul peak ({r['precision']}): {r['matmul_tflops']:.1f} TFLOP/s   copy: {r['copy_gbps']:.0f} GB/s")
    cr = r.get('correctness', {})
    if 'max_rel_diff' in cr: print(f"correctness: first losses bf16 vs fp32 max rel diff {cr['max_rel_diff']:.2e}, finite={cr['finite']}, ok={cr['ok']}")
    print(f"sdpa backend: {r.get('sdpa_backend')}")
    p = r['plan']; print(f"planner: micro-batch {p['micro_batch']} within {p['budget'] / 2**30:.1f} GiB")
    print(f"{'model':<10}{'compile':>8}{'batch':>7}{'tok/s':>12}{'ms/it':>9}{'MFU':>7}{'peak GiB':>10}{'pred GiB':>10}")
    for t in r['train']:
        if 'error' in t: print(f"{'gpt':<10}{str(t['compile']):>8}  error: {t['error'][:80]}"); continue
        pk = t.get('peak_bytes'); pr = t['predicted_peak_bytes']
        print(f"{'gpt':<10}{str(t['compile']):>8}{t['micro_batch']:>7}{t['tokens_per_s']:>12,.0f}{t['ms_per_iter']:>9.1f}"
              f"{t['mfu']:>7.1%}{(pk or 0) / 2**30:>10.2f}{pr / 2**30:>10.2f}")
    cn = r.get('cnn', {})
    if 's_per_epoch' in cn: print(f"seed CNN ({cn['source']}, batch 32, resident): {cn['s_per_epoch']:.2f} s/epoch, test acc {cn['test_acc']:.4f} after 2 epochs")
    g = r.get('generation', {})
    if 'with_cache' in g: print(f"generation ({g['new_tokens']} tokens): {g['with_cache']:.0f} tok/s with KV cache, {g['without_cache']:.0f} without ({g['speedup']:.1f}x), same greedy tokens: {g['same_greedy_tokens']}")
    if 'with_cache_compiled' in g: print(f"generation, compile=True ({'CUDA graphs' if r['device'].startswith('cuda') else 'Inductor'}): {g['with_cache_compiled']:.0f} tok/s ({g['compiled_speedup']:.1f}x the eager cache; target >= 220 tok/s for GPT-2 124M on a GPU), warm-up {g['warmup_s_with_cache_compiled']:.1f} s, same greedy tokens: {g['same_greedy_tokens_compiled']}")
    pl = r.get('planner')
    if isinstance(pl, list):
        print(f"{'memory planner':<18}{'batch':>6}{'prec':>6}{'pred MB':>10}{'meas MB':>10}{'error':>8}")
        for x in pl: print(f"{x['family']:<18}{x['micro_batch']:>6}{x['precision']:>6}{x['predicted_MB']:>10.1f}{x['measured_MB']:>10.1f}{x['error']:>+8.1%}")
    print(f"total {r['total_s']:.0f} s")

if __name__ == '__main__':
    main()
