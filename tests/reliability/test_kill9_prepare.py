"""kill -9 of `llmtrain prepare` (with a pool of 2 workers) at three seeded moments while it writes its token shards:
no shard folder that looks complete is left, no worker process outlives it, and rerunning finishes shards
byte-identical to an uninterrupted run's."""
import json, os, random, signal, subprocess, sys, time
import pytest
from relutil import env, ROOT

import llmtrain.shards as shards
import llmtrain.data as data
pytestmark = pytest.mark.xdist_group('kill9-prepare')

def command(corpus, out):
    return [sys.executable, '-m', 'llmtrain.cli', 'prepare', str(corpus), str(out), '--workers', '2', '--chunk_bytes', '65536']

def start(corpus, out): return subprocess.Popen(command(corpus, out), env=env(), cwd=ROOT,
                                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

def children(pid):
    "Process ids whose parent is `pid` (from /proc)."
    out = []
    for d in os.listdir('/proc'):
        if d.isdigit():
            try: stat = open(f'/proc/{d}/stat').read()
            except OSError: continue
            if int(stat.rsplit(')', 1)[1].split()[1]) == pid: out.append(int(d))
    return out

def alive(pid):
    try: return open(f'/proc/{pid}/stat').read().split()[2] != 'Z'
    except OSError: return False

@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    rng = random.Random(0)
    words = [''.join(rng.choice('abcdefghijklmnopqrstuvwxyzé') for _ in range(rng.randint(1, 9))) for _ in range(3000)]
    p = tmp_path_factory.mktemp('prep')/'corpus.txt'
    p.write_text('\n'.join(' '.join(rng.choices(words, k=12)) for _ in range(30_000)) + '\n', encoding='utf-8')
    return p

def test_kill9_during_prepare_leaves_nothing_complete_and_rerun_finishes(corpus, tmp_path):
    ref = tmp_path/'ref'
    r = subprocess.run(command(corpus, ref), env=env(), cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    size = (ref/'train.bin').stat().st_size
    out, partial, rng, seen = tmp_path/'shards', tmp_path/'.shards.partial', random.Random(11), []
    for frac in sorted(rng.uniform(0.05, 0.95) for _ in range(3)):
        p, t0, kids = start(corpus, out), time.time(), set()
        while time.time() - t0 < 120:
            assert p.poll() is None, f"prepare ended before the kill at {frac:.0%}: {p.stderr.read().decode()[-1500:]}"
            kids |= set(children(p.pid))
            f = partial/'train.bin'
            if f.exists() and f.stat().st_size >= frac * size: break
            time.sleep(0.002)
        else: raise AssertionError(f"train.bin never reached {frac:.0%} of {size} bytes")
        kids |= set(children(p.pid))
        os.kill(p.pid, signal.SIGKILL); p.wait()
        assert p.returncode == -signal.SIGKILL
        assert not out.exists() and not data.is_shard_dir(out)           # nothing that looks complete
        with pytest.raises(Exception) as e: data.load_shards(out)
        assert 'llmtrain prepare' in str(e.value)                           # the error says how to make it
        t1 = time.time()
        while any(alive(k) for k in kids) and time.time() - t1 < 10: time.sleep(0.05)
        assert not any(alive(k) for k in kids), f"worker processes outlived the killed prepare: {kids}"
        seen.append(len(kids))
    assert max(seen) >= 2, f"no kill caught a pool of 2 workers running: {seen}"
    r = subprocess.run(command(corpus, out), env=env(), cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert not partial.exists()
    for f in ('train.bin', 'val.bin', 'tokenizer.json'): assert (out/f).read_bytes() == (ref/f).read_bytes(), f
    a, b = (json.loads((d/'meta.json').read_text()) for d in (ref, out))
    for k in ('tokens', 'bytes', 'sha256', 'dtype', 'tokenizer'): assert a[k] == b[k], k
    d = data.load_shards(out, verify=True)
    assert len(d.train) + len(d.val) == sum(a['tokens'].values())
