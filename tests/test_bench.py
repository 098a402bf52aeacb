"""bench/gpu.py's code paths on the CPU (its --smoke mode): the GPU script must never rot where there is no GPU."""
import json, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def test_gpu_bench_smoke_on_cpu(tmp_path):
    out = tmp_path/'gpu.json'
    r = subprocess.run([sys.executable, 'bench/gpu.py', '--device', 'cpu', '--smoke', '--out', str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res['correctness']['ok'] and res['correctness']['finite']
    assert all('error' not in t for t in res['train']) and len(res['train']) >= 1
    assert all(t['tokens_per_s'] > 0 and 0 < t['mfu'] for t in res['train'])
    assert res['generation']['same_greedy_tokens']
    assert res['cnn']['s_per_epoch'] > 0
    assert 'llmtrain bench/gpu.py' in r.stdout
