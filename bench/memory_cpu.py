"""The memory planner (`llmtrain.resources.gpt_memory`) against measurement on this CPU.

    python bench/memory_cpu.py          # about a minute; results in bench/out/memory_cpu.json

For each shape: the planner's predicted peak of an AdamW training step; the measured peak of live tensors over two steps
(`measure_step_peak`: a TorchDispatchMode that counts every storage an op creates until it is freed, plus the
parameters: what CUDA's allocator would report); and the growth of a fresh process's peak resident memory over the same
steps (`measure_step_rss`: the operating system's view, which adds the C allocator's free lists and library scratch).
Target (issue #7): predicted within +-20% of the measured peak on at least four configurations."""
import json, sys, time
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from llmtrain.models import GPTConfig
from llmtrain.resources import gpt_memory, measure_step_peak, measure_step_rss

CONFIGS = [  # (n_layer, n_embd, block_size, vocab_size, micro_batch, precision)
    (4, 128, 64, 65, 12, 'fp32'), (4, 256, 128, 4096, 16, 'fp32'), (4, 256, 256, 65, 16, 'fp32'),
    (6, 384, 256, 65, 8, 'fp32'), (6, 384, 256, 65, 8, 'bf16'), (4, 256, 256, 65, 64, 'fp32'), (6, 384, 256, 65, 32, 'bf16')]

def main():
    torch.set_num_threads(1)
    rows = []
    for L, C, T, V, B, prec in CONFIGS:
        c = GPTConfig(n_layer=L, n_head=C // 64, n_embd=C, block_size=T, vocab_size=V)
        t = time.perf_counter()
        pred, meas, rss = gpt_memory(c, B, prec, 'cpu')['peak'], measure_step_peak(c, B, prec, device='cpu'), measure_step_rss(c, B, prec)
        rows.append(dict(config=f"{L}L x {C}, T={T}, V={V}", micro_batch=B, precision=prec, predicted_MB=pred / 1e6,
                         measured_MB=meas / 1e6, error=pred / meas - 1, process_MB=rss / 1e6 if rss else None,
                         seconds=time.perf_counter() - t))
        r = rows[-1]
        print(f"{r['config']:24s} B={B:<3d} {prec}: predicted {r['predicted_MB']:7.1f} MB, measured {r['measured_MB']:7.1f} MB "
              f"({r['error']:+.1%}), fresh process {r['process_MB']:7.1f} MB", flush=True)
    ok = sum(abs(r['error']) <= 0.2 for r in rows)
    print(f"\nwithin +-20%: {ok} of {len(rows)} configurations (target: at least 4)")
    out = Path('bench/out/memory_cpu.json'); out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(torch=torch.__version__, rows=rows), indent=1))

if __name__ == '__main__': main()
