"""The bench scripts in their --smoke modes: bench/gpu.py on the CPU (it must never rot where there is no GPU), bench/generate.py, bench/attention_cpu.py and others."""
import json, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def run_bench(script, tmp_path, *args, timeout=300):
    "Run `bench/SCRIPT --smoke` writing its JSON into `tmp_path`: `(completed process, parsed JSON)`."
    out = tmp_path/(Path(script).stem + '.json')
    r = subprocess.run([sys.executable, f'bench/{script}', *args, '--smoke', '--out', str(out)], cwd=ROOT, capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r, json.loads(out.read_text())

def test_gpu_bench_smoke_on_cpu(tmp_path):
    r, res = run_bench('gpu.py', tmp_path, '--device', 'cpu')
    assert res['correctness']['ok'] and res['correctness']['finite']
    assert all('error' not in t for t in res['train']) and len(res['train']) >= 1
    assert all(t['tokens_per_s'] > 0 and 0 < t['mfu'] for t in res['train'])
    assert res['generation']['same_greedy_tokens'] and res['generation']['same_greedy_tokens_compiled']   # fp32 on a CPU
    assert res['generation']['with_cache_compiled'] > 0
    assert res['cnn']['s_per_epoch'] > 0
    assert len(res['planner']) >= 2 and all(abs(x['error']) < 0.2 for x in res['planner'])   # the memory planner's rows
    assert 'llmtrain bench/gpu.py' in r.stdout

def test_generate_bench_smoke(tmp_path):
    "bench/generate.py times no cache, the cache and the compiled static-cache step, with the same greedy tokens all three ways."
    r, res = run_bench('generate.py', tmp_path)
    (m,) = res['models']
    assert m['same_greedy_tokens'] and min(m['tok_s_no_cache'], m['tok_s_cache'], m['tok_s_cache_compiled']) > 0
    assert 'compiled tok/s' in r.stdout

def test_attention_bench_smoke(tmp_path):
    "bench/attention_cpu.py runs both kernels in both dtypes and writes its table."
    rows = run_bench('attention_cpu.py', tmp_path)[1]['rows']
    assert {(x['dtype'], x['T']) for x in rows} == {(d, t) for d in ('bfloat16', 'float32') for t in (64, 128)}
    assert all(x['sdpa_ms'] > 0 and x['matmul_ms'] > 0 for x in rows)

def test_load_pretrained_bench_smoke(tmp_path):
    "bench/load_pretrained.py writes a sharded Llama-shaped checkpoint, loads it in a fresh process and reports the peak-memory rise."
    r, res = run_bench('load_pretrained.py', tmp_path)
    assert res['correct'] is True and res['shards'] == 2 and res['dtype'] == 'torch.bfloat16'
    assert res['param_bytes'] == res['weight_bytes'] > 0 and res['peak_rise'] > 0 and res['load_s'] > 0
    assert 'llmtrain bench/load_pretrained.py' in r.stdout

def test_tasks_bench_smoke(tmp_path):
    "bench/tasks.py scores both tasks both ways on a GPT and an LSTM, char and BPE, with the same log-likelihoods."
    rows = run_bench('tasks.py', tmp_path)[1]['rows']
    assert {(x['model'].split()[0], x['tokenizer'].split()[0], x['task'], x['fewshot']) for x in rows} == \
           {(m, t, *k) for m in ('gpt', 'lstm') for t in ('char', 'bpe') for k in (('shakespeare_speaker', 0), ('shakespeare_speaker', 3), ('pydoc_cloze', 0))}
    assert all(x['batched_items_per_s'] > 0 and x['one_by_one_items_per_s'] > 0 and x['max_ll_diff'] < 1e-3 for x in rows)

def test_speedrun_bench_smoke(tmp_path):
    "bench/speedrun.py trains both configs through the CLI, finds the evaluation that reaches the target and writes the ratio."
    r, res = run_bench('speedrun.py', tmp_path, timeout=600)
    assert {x['config'] for x in res['runs']} == {'speedrun', 'baseline'} and all(x['iters'] == 30 for x in res['runs'])
    assert all(x['iter_to_target'] == 30 and x['s_to_target'] > 0 for x in res['runs'])       # target 10: met at the one eval
    assert res['ratio'] == round(res['median_s_to_target']['speedrun'] / res['median_s_to_target']['baseline'], 3)
    assert 'ratio speedrun / baseline' in r.stdout
