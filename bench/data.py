"""The data layer at scale: prepare_shards throughput and peak memory, and the cost of a batch from memmapped shards.

    python bench/data.py                      # the full run: pystdlib (~12 MB), char and BPE-4096 (a few minutes on 2 cores)
    python bench/data.py --smoke              # pydoc (~0.5 MB), BPE-512: a check that the script runs (~1 minute)
    python bench/data.py --parts prepare,rss --workers 2

Parts:
  prepare   prepare_shards on the corpus with each tokenizer and --workers processes: end-to-end MB/s (tokenizer training
            included), encode MB/s (reading, decoding, encoding, writing, hashing) and, for BPE, whether the ids equal Hugging Face
            tokenizers' on the whole corpus (ids_equal_hf). Target: >= 10 MB/s on 2 cores.
  rss       peak resident memory of a prepare run on 1x and 4x the corpus (4x: four copies concatenated in one file), each
            in a fresh child process: max of its own ru_maxrss and RUSAGE_CHILDREN (its worker processes). The import
            baseline (python + llmtrain + torch) is measured the same way. Target: roughly flat (4x / 1x close to 1).
  sample    one 12 x 64 batch drawn by RandomWindows from the memmapped char shards vs one training step (forward,
            backward, AdamW) of nanoGPT's CPU recipe model (4 layers, 4 heads, 128 wide, block 64, batch 12), fp32, one
            thread, medians. Target: < 2%.
Each prepare runs in its own child process (`--child`), so no run inherits another's memory or warm caches of Python
objects; the file-system cache is warm for all of them (the corpus is read once before timing).
Results go to --out as JSON (default bench/out/data.json) and a table is printed last."""
import argparse, json, os, resource, statistics, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

def peak_rss_mb():
    "Peak RSS of this process and of its waited-for children (its pool workers), in MB (Linux reports KiB)."
    scale = 1 / 1024 if sys.platform != 'darwin' else 1 / 2**20
    return (max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
            * scale)

def child(args):
    "Run one prepare (or only the imports, for the baseline) and print its numbers as JSON."
    import llmtrain.shards as sh
    res = dict(rss_mb=None)
    if args.child != 'baseline':
        kind, corpus, out = args.child.split('|')
        t0 = time.perf_counter()
        sh.prepare_shards(corpus, out, tokenizer=kind, vocab_size=args.vocab if kind == 'bpe' else None,
                          workers=args.workers, progress=False)
        from llmtrain.data import read_shard_meta
        res.update(seconds=time.perf_counter() - t0, meta=read_shard_meta(out))
    res['rss_mb'] = peak_rss_mb()
    print('RESULT ' + json.dumps(res))

def run_child(args, spec):
    cmd = [sys.executable, __file__, '--child', spec, '--workers', str(args.workers), '--vocab', str(args.vocab)]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, 'PYTHONPATH': str(ROOT)})
    if r.returncode: raise SystemExit(f"child {spec} failed:\n{r.stderr[-3000:]}")
    return json.loads(next(l for l in r.stdout.splitlines() if l.startswith('RESULT '))[7:])

def check_ids(src, shard_dir):
    "Whether the shards' BPE ids (train then val) are those Hugging Face `tokenizers` itself gives for the whole corpus."
    import numpy as np
    from llmtrain.preprocessing import load_tokenizer, _text_chunks
    from llmtrain.data import read_shard_meta
    tok, meta = load_tokenizer(Path(shard_dir)/'tokenizer.json'), read_shard_meta(shard_dir)
    ids = np.concatenate([np.fromfile(Path(shard_dir)/f'{p}.bin', dtype=meta['dtype']) for p in ('train', 'val')])
    enc = tok.hf.encode_batch_fast(_text_chunks(src.read_text(encoding='utf-8')), add_special_tokens=False)
    return bool(np.array_equal(ids, np.concatenate([np.asarray(e.ids) for e in enc])))

def bench_prepare(args, src, work, results):
    mb = src.stat().st_size / 1e6
    for kind in args.tokenizers:
        runs = [run_child(args, f'{kind}|{src}|{work}/{kind}-{i}') for i in range(args.rounds)]
        best = min(runs, key=lambda r: r['seconds'])
        m = best['meta']
        same = check_ids(src, f'{work}/{kind}-{runs.index(best)}') if kind == 'bpe' else None
        results['prepare'].append(dict(
            tokenizer=kind, vocab_size=m['tokenizer']['vocab_size'], workers=args.workers, MB=round(mb, 2),
            tokens=sum(m['tokens'].values()), bytes_per_token=round(mb * 1e6 / sum(m['tokens'].values()), 3),
            total_s=round(best['seconds'], 2), total_MBps=round(mb / best['seconds'], 2),
            encode_s=m['encode_seconds'], encode_MBps=round(mb / m['encode_seconds'], 2), rss_mb=round(best['rss_mb']),
            **({} if same is None else dict(ids_equal_hf=same))))
        print(f"prepare {kind}: {results['prepare'][-1]}", flush=True)
        for i in range(args.rounds): subprocess.run(['rm', '-rf', f'{work}/{kind}-{i}'])

def bench_rss(args, src, work, results):
    four = Path(work)/'corpus4x.txt'
    with open(four, 'wb') as f:
        for _ in range(4): f.write(src.read_bytes())
    base = run_child(args, 'baseline')['rss_mb']
    results['rss']['baseline_import_mb'] = round(base)
    for kind in args.tokenizers:
        row = dict(tokenizer=kind)
        for name, path in (('1x', src), ('4x', four)):
            r = run_child(args, f'{kind}|{path}|{work}/rss-{kind}-{name}')
            row[f'{name}_MB'] = round(path.stat().st_size / 1e6, 1)
            row[f'{name}_rss_mb'] = round(r['rss_mb'])
            subprocess.run(['rm', '-rf', f'{work}/rss-{kind}-{name}'])
        row['ratio_4x_1x'] = round(row['4x_rss_mb'] / row['1x_rss_mb'], 3)
        row['ratio_above_baseline'] = round((row['4x_rss_mb'] - base) / max(1, row['1x_rss_mb'] - base), 3)
        results['rss']['runs'].append(row)
        print(f"rss {kind}: {row} (import baseline {base:.0f} MB)", flush=True)

def bench_sample(args, src, work, results):
    import torch
    import numpy as np
    from llmtrain.data import RandomWindows
    from llmtrain.models import GPT, GPTConfig
    from llmtrain.shards import prepare_shards
    from llmtrain.data import load_shards
    torch.set_num_threads(1)
    d = load_shards(prepare_shards(src, f'{work}/sample', workers=args.workers, progress=False))
    block, batch = 64, 12
    model = GPT(GPTConfig(vocab_size=d.tokenizer.vocab_size, block_size=block, n_layer=4, n_head=4, n_embd=128,
                          tie_weights=False))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    mm = RandomWindows(d.train, block, batch, seed=0)
    ten = RandomWindows(torch.from_numpy(np.asarray(d.train).astype(np.int64)), block, batch, seed=0)
    def per_batch(s, n):
        for _ in range(50): next(s)
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(n): next(s)
            times.append((time.perf_counter() - t0) / n)
        return statistics.median(times)
    def step():
        x, y = next(mm)
        loss = model(x, y)[1]
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    for _ in range(10): step()
    steps = []
    for _ in range(args.steps):
        t0 = time.perf_counter(); step(); steps.append(time.perf_counter() - t0)
    n = 200 if args.smoke else 2000
    b_mm, b_ten, s = per_batch(mm, n), per_batch(ten, n), statistics.median(steps)
    results['sample'] = dict(batch=batch, block=block, memmap_batch_us=round(b_mm * 1e6, 1),
                             tensor_batch_us=round(b_ten * 1e6, 1), train_step_ms=round(s * 1e3, 2),
                             memmap_share_of_step=round(b_mm / s, 5))
    print(f"sample: {results['sample']}", flush=True)

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--smoke', action='store_true', help='pydoc and BPE-512: a quick check that everything runs')
    p.add_argument('--parts', default='prepare,rss,sample')
    p.add_argument('--corpus', default=None, help='default: pystdlib (pydoc with --smoke)')
    p.add_argument('--tokenizers', default='char,bpe')
    p.add_argument('--vocab', type=int, default=None, help='BPE vocabulary (default 4096; 512 with --smoke)')
    p.add_argument('--workers', type=int, default=len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count())
    p.add_argument('--rounds', type=int, default=None, help='prepare runs per tokenizer, best kept (default 3; 1 with --smoke)')
    p.add_argument('--steps', type=int, default=None, help='training steps timed (default 100; 20 with --smoke)')
    p.add_argument('--out', default=str(ROOT/'bench'/'out'/'data.json'))
    p.add_argument('--child', default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.vocab = args.vocab or (512 if args.smoke else 4096)
    if args.child: return child(args)
    args.tokenizers = args.tokenizers.split(',')
    args.rounds = args.rounds or (1 if args.smoke else 3)
    args.steps = args.steps or (20 if args.smoke else 100)
    from llmtrain.data import corpus_path
    corpus = args.corpus or ('pydoc' if args.smoke else 'pystdlib')
    files = corpus_path(corpus)
    results = dict(corpus=corpus, workers=args.workers, cores=os.cpu_count(), smoke=args.smoke, prepare=[],
                   rss=dict(runs=[]), python=sys.version.split()[0])
    with tempfile.TemporaryDirectory(prefix='bench-data-') as work:
        src = Path(work)/'corpus.txt'
        with open(src, 'wb') as f:
            for q in files: f.write(q.read_bytes())
        results['MB'] = round(src.stat().st_size / 1e6, 2)
        parts = args.parts.split(',')
        if 'prepare' in parts: bench_prepare(args, src, work, results)
        if 'rss' in parts: bench_rss(args, src, work, results)
        if 'sample' in parts: bench_sample(args, src, work, results)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"\nllmtrain bench/data.py on {corpus} ({results['MB']} MB), {args.workers} workers, {os.cpu_count()} cores"
          f"{' (smoke)' if args.smoke else ''}")
    if results['prepare']:
        print(f"{'tokenizer':>9} {'vocab':>6} {'tokens':>11} {'B/tok':>6} {'total MB/s':>10} {'encode MB/s':>11} {'RSS MB':>7}")
        for r in results['prepare']:
            print(f"{r['tokenizer']:>9} {r['vocab_size']:>6} {r['tokens']:>11,} {r['bytes_per_token']:>6.2f} "
                  f"{r['total_MBps']:>10.1f} {r['encode_MBps']:>11.1f} {r['rss_mb']:>7}")
    for r in results['rss']['runs']:
        print(f"peak RSS {r['tokenizer']}: {r['1x_MB']} MB corpus -> {r['1x_rss_mb']} MB, {r['4x_MB']} MB -> {r['4x_rss_mb']} MB "
              f"(x{r['ratio_4x_1x']}; import baseline {results['rss']['baseline_import_mb']} MB)")
    if 'sample' in results:
        s = results['sample']
        print(f"batch from memmap {s['memmap_batch_us']} us (tensor {s['tensor_batch_us']} us) vs train step "
              f"{s['train_step_ms']} ms: {s['memmap_share_of_step']:.3%} of a step")
    print(f"results in {args.out}")

if __name__ == '__main__':
    main()
