"""Serving throughput on this CPU: `llmtrain serve`'s engine batched against one request at a time, through HTTP.

    python bench/serve.py                    # 128 requests from 32 concurrent clients, 64 new tokens each (about a minute, 1 thread)
    python bench/serve.py --smoke            # 8 requests, 4 clients, 8 tokens: checks the script, not the machine

The model is a randomly initialised GPT of the CPU recipe's shape (4L/4H/128, block 256; speed does not depend on the
weights) with a character tokenizer of Python's pydoc topics. The server (uvicorn in this process, 127.0.0.1, a free
port) is started twice: with one slot (`max_batch=1`: requests are served one at a time, the rest wait in its queue) and
with 32 slots (continuous batching). The same requests (greedy /v1/completions, a 20-character pydoc prompt each, a
fixed number of new tokens) are sent by `--clients` concurrent HTTP clients (threads, urllib). Latency is a request's
time from sending to its whole reply; tokens/s is all new tokens over the wall time. Target: batched >= 3x the tokens/s
of one at a time. Results go to --out as JSON; a table is printed last."""
import argparse, json, statistics, sys, time, urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from llmtrain.models import GPT, GPTConfig
from llmtrain.preprocessing import train_tokenizer
from llmtrain.serve import Engine, create_app, ServerThread

def post(url, body, timeout=600):
    t = time.perf_counter()
    with urllib.request.urlopen(urllib.request.Request(url, json.dumps(body).encode(), {'Content-Type': 'application/json'}), timeout=timeout) as r:
        out = json.loads(r.read())
    return time.perf_counter() - t, out

def measure(model, tok, prompts, tokens, clients, max_batch):
    "Serve `prompts` from `clients` concurrent HTTP clients through an engine with `max_batch` slots."
    with ServerThread(create_app(Engine(model, tok, max_batch=max_batch, max_queue=len(prompts)), 'bench')) as srv:
        url = srv.url + '/v1/completions'
        post(url, dict(prompt=prompts[0], max_tokens=2, temperature=0))                   # warm-up
        body = lambda p: dict(prompt=p, max_tokens=tokens, temperature=0)
        errors, res = 0, []
        t0 = time.perf_counter()
        with ThreadPoolExecutor(clients) as ex:
            for f in [ex.submit(post, url, body(p)) for p in prompts]:
                try: res.append(f.result())
                except Exception: errors += 1
        wall = time.perf_counter() - t0
    lat = sorted(r[0] for r in res)
    n = sum(r[1]['usage']['completion_tokens'] for r in res)
    return dict(max_batch=max_batch, requests=len(prompts), clients=clients, errors=errors, seconds=wall, tokens=n,
                tokens_per_s=n / wall, p50_s=statistics.median(lat), p99_s=lat[min(len(lat) - 1, int(0.99 * len(lat)))],
                replies=[r[1]['choices'][0]['text'] for r in res])

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--requests', type=int, default=128)
    ap.add_argument('--clients', type=int, default=32)
    ap.add_argument('--tokens', type=int, default=64, help='new tokens per request')
    ap.add_argument('--slots', type=int, default=32, help='max_batch of the batched server')
    ap.add_argument('--threads', type=int, default=1, help='torch threads (1: as the test suite and the reference numbers)')
    ap.add_argument('--smoke', action='store_true', help='8 requests, 4 clients, 8 tokens, a tiny model')
    ap.add_argument('--out', default='bench/out/serve.json')
    a = ap.parse_args()
    if a.smoke: a.requests, a.clients, a.tokens = 8, 4, 8
    torch.set_num_threads(a.threads)
    import pydoc_data.topics
    corpus = ''.join(pydoc_data.topics.topics.values())
    tok = train_tokenizer('char', corpus)
    torch.manual_seed(0)
    shape = dict(n_layer=2, n_head=2, n_embd=64, block_size=128) if a.smoke else dict(n_layer=4, n_head=4, n_embd=128, block_size=256)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, **shape)).eval()
    prompts = [corpus[i * 997:i * 997 + 20] for i in range(a.requests)]
    one = measure(model, tok, prompts, a.tokens, a.clients, 1)
    many = measure(model, tok, prompts, a.tokens, a.clients, a.slots)
    same = one.pop('replies') == many.pop('replies')
    res = dict(torch=torch.__version__, threads=torch.get_num_threads(), model=shape, args=vars(a), one_at_a_time=one, batched=many,
               speedup=many['tokens_per_s'] / one['tokens_per_s'], same_replies=same)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    cmd = 'python bench/serve.py' + (' --smoke' if a.smoke else '')
    print(f"llmtrain {cmd}: {a.requests} requests, {a.clients} clients, {a.tokens} new tokens each, model {shape}, {res['threads']} thread(s)")
    print(f"{'server':>22} {'tokens/s':>10} {'p50 s':>8} {'p99 s':>8} {'errors':>7}")
    for name, r in (('one at a time', one), (f'batched ({a.slots} slots)', many)):
        print(f"{name:>22} {r['tokens_per_s']:10.1f} {r['p50_s']:8.3f} {r['p99_s']:8.3f} {r['errors']:7d}")
    print(f"batched / one at a time: {res['speedup']:.1f}x tokens/s; same greedy replies: {same}")

if __name__ == '__main__': main()
