"""The memory planner (`llmtrain.resources.gpt_memory`) against measurement on this CPU.

    python bench/memory_cpu.py          # about a minute; results in bench/out/memory_cpu.json

For each shape: the planner's predicted peak of an AdamW training step; the measured peak of live tensors over two steps
(`measure_step_peak`: a TorchDispatchMode that counts every storage an op creates until it is freed, plus the
parameters: what CUDA's allocator would report); and the growth of a fresh process's peak resident memory over the same
steps (`measure_step_rss`: the operating system's view, which adds the C allocator's free lists and library scratch).
Target (issue #7): predicted within +-20% of the measured peak on at least four configurations.

Then every model family `llmtrain train` builds (issue #23), through `planner_check`: the plan `model_memory` makes for a
TrainConfig (GPT with GPT-2 and Llama switches, RNN, LSTM, GRU, the seed's CNN and the stronger one) against the
measured live-tensor peak of two AdamW steps of the real model. Target: every family within +-20%.
`--families-only` skips the GPT shapes above."""
import json, sys, time
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from llmtrain.models import GPTConfig
from llmtrain.core import TrainConfig
from llmtrain.resources import gpt_memory, measure_step_peak, measure_step_rss, planner_check

CONFIGS = [  # (n_layer, n_embd, block_size, vocab_size, micro_batch, precision)
    (4, 128, 64, 65, 12, 'fp32'), (4, 256, 128, 4096, 16, 'fp32'), (4, 256, 256, 65, 16, 'fp32'),
    (6, 384, 256, 65, 8, 'fp32'), (6, 384, 256, 65, 8, 'bf16'), (4, 256, 256, 65, 64, 'fp32'), (6, 384, 256, 65, 32, 'bf16')]

FAMILIES = [  # (label, TrainConfig fields, vocabulary or classes, image shape, precision)
    ('gpt', dict(model='gpt', n_layer=4, n_head=4, n_embd=256, block_size=128, batch_size=16), 65, None, 'fp32'),
    ('gpt bf16', dict(model='gpt', n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=8), 65, None, 'bf16'),
    ('gpt llama', dict(model='gpt', n_layer=4, n_head=4, n_embd=256, block_size=128, batch_size=16, pos_emb='rope', norm='rmsnorm', mlp='swiglu'), 65, None, 'fp32'),
    ('gpt llama bf16', dict(model='gpt', n_layer=4, n_head=4, n_embd=256, block_size=128, batch_size=16, pos_emb='rope', norm='rmsnorm', mlp='swiglu'), 65, None, 'bf16'),
    ('rnn', dict(model='rnn', n_layer=3, n_embd=256, block_size=64, batch_size=32), 65, None, 'fp32'),
    ('lstm', dict(model='lstm', n_layer=2, n_embd=320, block_size=64, batch_size=24), 65, None, 'fp32'),
    ('lstm bf16', dict(model='lstm', n_layer=3, n_embd=192, block_size=96, batch_size=16), 500, None, 'bf16'),
    ('gru', dict(model='gru', n_layer=2, n_embd=256, block_size=128, batch_size=16), 1000, None, 'fp32'),
    ('gru bf16', dict(model='gru', n_layer=2, n_embd=256, block_size=64, batch_size=32), 65, None, 'bf16'),
    ('seed_cnn', dict(model='seed_cnn', batch_size=128), 10, (1, 28, 28), 'fp32'),
    ('strong_cnn', dict(model='strong_cnn', batch_size=128, dropout=0.25), 10, (1, 28, 28), 'fp32'),
    ('strong_cnn 8x8', dict(model='strong_cnn', batch_size=64, dropout=0.25), 10, (1, 8, 8), 'fp32')]

def families(device='cpu', configs=FAMILIES):
    "The planner against measurement for each model family in `configs` on `device` (rows of dicts)."
    rows = []
    for label, kw, V, shape, prec in configs:
        t = time.perf_counter()
        r = planner_check(TrainConfig(**kw), V, shape, prec, device)
        rows.append(dict(family=label, micro_batch=kw['batch_size'], precision=prec, predicted_MB=r['predicted'] / 1e6,
                         measured_MB=r['measured'] / 1e6, error=r['error'], seconds=time.perf_counter() - t))
        print(f"{label:16s} B={kw['batch_size']:<4d} {prec}: predicted {rows[-1]['predicted_MB']:8.1f} MB, measured "
              f"{rows[-1]['measured_MB']:8.1f} MB ({r['error']:+.1%})", flush=True)
    return rows

def main():
    torch.set_num_threads(1)
    rows = []
    for L, C, T, V, B, prec in ([] if '--families-only' in sys.argv else CONFIGS):
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
    if rows: print(f"\nwithin +-20%: {ok} of {len(rows)} configurations (target: at least 4)\n")
    fam = families()
    ok = sum(abs(r['error']) <= 0.2 for r in fam)
    print(f"\nmodel families within +-20%: {ok} of {len(fam)} (target: all); worst {max(abs(r['error']) for r in fam):.1%}")
    out = Path('bench/out/memory_cpu.json'); out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(torch=torch.__version__, rows=rows, families=fam), indent=1))

if __name__ == '__main__': main()
