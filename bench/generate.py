"""Generation speed on this CPU: tokens/s of sampling with and without the KV cache, and with the cache's one-token steps compiled (`compile=True`), measured in the same run.

    python bench/generate.py                 # 256 new tokens, CPU-recipe GPT and a wider one (about 2 minutes, 1 thread)
    python bench/generate.py --smoke         # 32 new tokens, small models: checks the script, not the machine

Each model is a randomly initialised GPT (speed does not depend on the weights), batch 1, fp32, prompt of one token,
sampled with temperature 1 through `llmtrain.generation.token_stream`: with the cache (one position per new token,
the window refilled from its last half block when full) and without it (a forward pass over up to block_size
positions per token), and with the cache and `compile=True` (a static cache, one-token steps through torch.compile:
Inductor's kernels on a CPU, CUDA graphs on a GPU; compile time is spent in the warm-up, not counted). Rounds alternate
between the three; the median round counts. Targets: cache >= 3x faster than no cache for 256 new tokens at block 64 on
the CPU. `--compile 0` leaves the compiled column out. Results go to --out as JSON and a table is printed last."""
import argparse, json, statistics, sys, time
from pathlib import Path
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from llmtrain.models import GPT, GPTConfig
from llmtrain.generation import decode_speed, generate_ids

MODELS = {'cpu-recipe 4L/4H/128, block 64': dict(n_layer=4, n_head=4, n_embd=128, block_size=64),
          'wide 6L/6H/384, block 256': dict(n_layer=6, n_head=6, n_embd=384, block_size=256)}
SMOKE = {'tiny 2L/2H/64, block 64': dict(n_layer=2, n_head=2, n_embd=64, block_size=64)}

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--tokens', type=int, default=256, help='new tokens per measurement')
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--threads', type=int, default=1, help='torch threads (1: as the test suite and the reference numbers)')
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--smoke', action='store_true', help='small models, 32 tokens, 1 round')
    ap.add_argument('--compile', type=int, default=1, help='1: also measure compile=True (the compile takes seconds in the warm-up)')
    ap.add_argument('--out', default='bench/out/generate.json')
    a = ap.parse_args()
    if a.smoke: a.tokens, a.rounds = 32, 1
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    res = dict(torch=torch.__version__, threads=torch.get_num_threads(), device=str(dev), args=vars(a), models=[])
    for name, kw in (SMOKE if a.smoke else MODELS).items():
        torch.manual_seed(0)
        m = GPT(GPTConfig(vocab_size=65, **kw)).to(dev).eval()
        x = torch.zeros(1, 1, dtype=torch.long, device=dev)
        ways = {'no_cache': dict(use_cache=False), 'cache': dict(use_cache=True)}
        if a.compile: ways['cache_compiled'] = dict(use_cache=True, compile=True)
        greedy = {k: generate_ids(m, x, 16, 0, **w) for k, w in ways.items()}
        same = all(torch.equal(g, greedy['no_cache']) for g in greedy.values())
        for w in ways.values(): decode_speed(m, 8, **w)                                    # warm-up (and compile)
        t = {k: [] for k in ways}
        for _ in range(a.rounds):
            for k, w in ways.items(): t[k].append(decode_speed(m, a.tokens, **w))
        med = {k: statistics.median(v) for k, v in t.items()}
        r = dict(model=name, **kw, new_tokens=a.tokens, tok_s_no_cache=med['no_cache'], tok_s_cache=med['cache'],
                 speedup=med['cache'] / med['no_cache'], tok_s_cache_compiled=med.get('cache_compiled'),
                 speedup_compiled=med['cache_compiled'] / med['no_cache'] if a.compile else None,
                 same_greedy_tokens=same, raw_tok_s=t)
        res['models'].append(r); print(json.dumps(r), flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True); Path(a.out).write_text(json.dumps(res, indent=1))
    print(f"\n== bench/generate.py (torch {res['torch']}, {res['threads']} thread(s), {dev}, {a.tokens} new tokens, "
          f"median of {a.rounds}) ==")
    print(f"{'model':34} {'no cache tok/s':>15} {'cache tok/s':>12} {'speedup':>8} {'compiled tok/s':>15} {'speedup':>8}  greedy same")
    for r in res['models']:
        comp = f"{r['tok_s_cache_compiled']:15.0f} {r['speedup_compiled']:7.2f}x" if a.compile else f"{'-':>15} {'-':>8}"
        print(f"{r['model']:34} {r['tok_s_no_cache']:15.0f} {r['tok_s_cache']:12.0f} {r['speedup']:7.2f}x {comp}  {r['same_greedy_tokens']}")
    print("target: cache speedup >= 3x at 256 new tokens, block 64")

if __name__ == '__main__': main()
