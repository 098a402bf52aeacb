"""Peak memory of `llmtrain.pretrained.load_pretrained` on a sharded Llama-shaped checkpoint.

Writes random bf16 weights in Hugging Face's layout (config.json, model-0000k-of-0000n.safetensors, model.safetensors.index.json),
then loads them in a fresh Python process and reports the rise of its peak resident memory (ru_maxrss) over the bytes of the
weights (peak after the load less the resident memory before it): a loader that held the mapped files and the copies at once would show about 2x; the target is <= 1.3x.

    python bench/load_pretrained.py                 # ~1.1 GB: 10 layers of TinyLlama's shape, 6 shards
    python bench/load_pretrained.py --smoke         # a few MB, for the test suite
"""
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path
import torch

ROOT = Path(__file__).resolve().parents[1]

def shape(smoke):
    "A Llama config dict: TinyLlama-1.1B's widths with 10 layers (1.14 GB in bf16), or a tiny one."
    if smoke: return dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=512)
    return dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=10, num_attention_heads=32, num_key_value_heads=4, vocab_size=32000)

def write_checkpoint(folder: Path, cfg: dict, shards: int, seed=0) -> int:
    "Random bf16 tensors under Llama's names, split into `shards` safetensors files with an index; returns the bytes of the weights."
    from safetensors.torch import save_file
    C, H, L, V = cfg['hidden_size'], cfg['intermediate_size'], cfg['num_hidden_layers'], cfg['vocab_size']
    kv = C // cfg['num_attention_heads'] * cfg['num_key_value_heads']
    names = [('model.embed_tokens.weight', (V, C))]
    for i in range(L):
        p = f'model.layers.{i}.'
        names += [(p + 'input_layernorm.weight', (C,)), (p + 'self_attn.q_proj.weight', (C, C)), (p + 'self_attn.k_proj.weight', (kv, C)),
                  (p + 'self_attn.v_proj.weight', (kv, C)), (p + 'self_attn.o_proj.weight', (C, C)),
                  (p + 'post_attention_layernorm.weight', (C,)), (p + 'mlp.gate_proj.weight', (H, C)), (p + 'mlp.up_proj.weight', (H, C)),
                  (p + 'mlp.down_proj.weight', (C, H))]
    names += [('model.norm.weight', (C,)), ('lm_head.weight', (V, C))]
    total = sum(2 * torch.Size(s).numel() for _, s in names)
    per = total / shards
    g = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    weight_map, part, size, k = {}, {}, 0, 1
    def flush():
        nonlocal part, size, k
        fn = f'model-{k:05d}-of-{shards:05d}.safetensors'
        save_file(part, str(folder/fn), metadata={'format': 'pt'})
        weight_map.update({n: fn for n in part}); part, size, k = {}, 0, k + 1
    for n, s in names:
        part[n] = (torch.randn(s, generator=g) * 0.02).to(torch.bfloat16)
        size += part[n].numel() * 2
        if size >= per and k < shards: flush()
    if part: flush()
    if k - 1 != shards:                                   # fewer files than asked: rename to the count written
        raise SystemExit(f"wrote {k - 1} shards, not {shards}: pick fewer shards")
    (folder/'model.safetensors.index.json').write_text(json.dumps(dict(metadata=dict(total_size=total), weight_map=weight_map)))
    (folder/'config.json').write_text(json.dumps(dict(model_type='llama', architectures=['LlamaForCausalLM'], max_position_embeddings=2048,
                                                      rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False, torch_dtype='bfloat16', **cfg)))
    return total

CHILD = r"""
import json, resource, sys, time, os
import torch, safetensors, safetensors.torch, llmtrain.preprocessing, llmtrain.pretrained as P   # imports before the baseline
with torch.device('meta'): torch.nn.Embedding(2, 2)     # normal_ on the meta device first imports torch._dynamo (~80 MB): before the baseline too
def rss(kind='VmRSS'): return int(next(l for l in open('/proc/self/status') if l.startswith(kind)).split()[1]) * 1024
before_peak, before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, rss()
t = time.perf_counter()
model, tok = P.load_pretrained(sys.argv[1])
dt = time.perf_counter() - t
after_peak, after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, rss()
n = sum(p.numel() * p.element_size() for p in model.parameters())
check = None
if len(sys.argv) > 2:                                   # smoke: the weights are the file's
    from safetensors.torch import load_file
    f = sorted(os.listdir(sys.argv[1]))
    sd = {}
    for name in f:
        if name.endswith('.safetensors'): sd.update(load_file(os.path.join(sys.argv[1], name)))
    check = bool(torch.equal(model.lm_head.weight, sd['lm_head.weight']) and torch.equal(model.transformer.h[0].attn.c_attn.weight[:model.config.n_embd], sd['model.layers.0.self_attn.q_proj.weight']))
print(json.dumps(dict(load_s=dt, rss_before=before, rss_after=after, peak_before=before_peak, peak_after=after_peak, param_bytes=n,
                      anon_after=rss('RssAnon'), file_after=rss('RssFile'),
                      dtype=str(next(model.parameters()).dtype), correct=check)))
"""

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--smoke', action='store_true')
    ap.add_argument('--shards', type=int, default=None)
    ap.add_argument('--dir', default=None, help='where to write the checkpoint (default: a temporary folder, removed after)')
    ap.add_argument('--out', default=None, help='write the result as JSON here')
    a = ap.parse_args()
    shards = a.shards or (2 if a.smoke else 6)
    with tempfile.TemporaryDirectory(dir=a.dir) as d:
        folder = Path(d)/'ckpt'
        t = time.perf_counter()
        weight_bytes = write_checkpoint(folder, shape(a.smoke), shards)
        write_s = time.perf_counter() - t
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get('PYTHONPATH', ''))
        r = subprocess.run([sys.executable, '-c', CHILD, str(folder)] + (['check'] if a.smoke else []), capture_output=True, text=True, env=env)
        if r.returncode: raise SystemExit(r.stderr[-3000:])
        res = json.loads(r.stdout.strip().splitlines()[-1])
    res.update(weight_bytes=weight_bytes, shards=shards, write_s=write_s, peak_rise=res['peak_after'] - min(res['rss_before'], res['peak_before']),
               rss_rise=res['rss_after'] - res['rss_before'])
    res['peak_rise_over_weights'] = res['peak_rise'] / weight_bytes
    print(f"llmtrain bench/load_pretrained.py: {weight_bytes / 1e9:.2f} GB of {res['dtype']} weights in {shards} shards, loaded in "
          f"{res['load_s']:.2f} s; peak RSS rose {res['peak_rise'] / 1e9:.2f} GB = {res['peak_rise_over_weights']:.2f}x the weights "
          f"(resident after: +{res['rss_rise'] / 1e9:.2f} GB)")
    if a.out: Path(a.out).write_text(json.dumps(res, indent=1))
    return res

if __name__ == '__main__': main()
