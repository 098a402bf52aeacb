"""Causal attention on this CPU: SDPA (its CPU flash kernel) against `llmtrain.models.matmul_attention`, forward plus
backward, in bf16 and fp32, across sequence lengths; measured in the same run, interleaved, medians.

    python bench/attention_cpu.py             # 6 heads x 64 dims, 2,048 tokens per call, T = 64 .. 1024 (about 1 minute)
    python bench/attention_cpu.py --smoke     # two lengths, one round: checks the script, not the machine

`llmtrain.models.time_attention` does the timing: inputs laid out as in the model (views of one (B, T, 3C)
projection), so both kernels pay the same strides; chapter 2 plots the same measurement.
`attend` takes the matmul path for bf16 on the CPU up to `MATMUL_ATTENTION_MAX_T` keys: the table shows where that
threshold comes from. Results go to --out as JSON and a table is printed last."""
import argparse, json, sys
from pathlib import Path
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from llmtrain.models import time_attention, MATMUL_ATTENTION_MAX_T

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--lengths', default='64,128,256,384,512,768,1024')
    ap.add_argument('--heads', type=int, default=6); ap.add_argument('--head-dim', type=int, default=64)
    ap.add_argument('--tokens', type=int, default=2048, help='tokens per call (batch = tokens // T)')
    ap.add_argument('--rounds', type=int, default=8)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--smoke', action='store_true')
    ap.add_argument('--out', default='bench/out/attention_cpu.json')
    a = ap.parse_args()
    if a.smoke: a.lengths, a.rounds, a.tokens = '64,128', 1, 256
    torch.set_num_threads(a.threads); torch.manual_seed(0)
    rows = []
    for dtype in (torch.bfloat16, torch.float32):
        for T in map(int, a.lengths.split(',')):
            ms = time_attention(T, dtype, a.heads, a.head_dim, a.tokens, a.rounds)
            rows.append(dict(dtype=str(dtype).removeprefix('torch.'), T=T, sdpa_ms=ms['sdpa'], matmul_ms=ms['matmul'],
                             matmul_speedup=ms['sdpa'] / ms['matmul']))
            print(json.dumps(rows[-1]), flush=True)
    res = dict(torch=torch.__version__, threads=torch.get_num_threads(), args=vars(a), max_t=MATMUL_ATTENTION_MAX_T, rows=rows)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True); Path(a.out).write_text(json.dumps(res, indent=1))
    print(f"\n== bench/attention_cpu.py (torch {torch.__version__}, {res['threads']} threads, {a.heads} heads x {a.head_dim}, "
          f"{a.tokens} tokens per call; attend's matmul path: bf16, T <= {MATMUL_ATTENTION_MAX_T}) ==")
    print('| dtype | T | SDPA ms | matmul ms | matmul speed-up |\n| --- | --- | --- | --- | --- |')
    for r in rows: print(f"| {r['dtype']} | {r['T']} | {r['sdpa_ms']:.1f} | {r['matmul_ms']:.1f} | {r['matmul_speedup']:.2f}x |")

if __name__ == '__main__': main()
