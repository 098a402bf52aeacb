import pytest, hashlib
from llmtrain.core import DataError, CorpusNotFoundError
from llmtrain.data import load_corpus, corpus_path, CORPORA, sha256_file, download
from conftest import has_shakespeare

def test_builtin_corpora_need_no_network():
    text = load_corpus('pydoc')
    assert len(text) > 300_000 and 'def' in text

@pytest.mark.skipif(not has_shakespeare(), reason='tinyshakespeare.txt is not available offline on this machine')
def test_tinyshakespeare_from_seeded_cache():
    p, = corpus_path('tinyshakespeare')
    assert sha256_file(p) == CORPORA['tinyshakespeare'].sha256
    assert len(load_corpus('tinyshakespeare')) == 1_115_394

def test_missing_download_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv('LLMTRAIN_CACHE', str(tmp_path))
    monkeypatch.setattr(CORPORA['tinyshakespeare'], 'url', (tmp_path/'nowhere.txt').as_uri())
    with pytest.raises(CorpusNotFoundError) as e: load_corpus('tinyshakespeare')
    assert str(tmp_path/'corpora'/'tinyshakespeare.txt') in str(e.value)
    assert not list((tmp_path/'corpora').iterdir())            # nothing half-written left behind

def test_corrupt_cached_corpus_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv('LLMTRAIN_CACHE', str(tmp_path))
    (tmp_path/'corpora').mkdir(); (tmp_path/'corpora'/'tinyshakespeare.txt').write_text('not it')
    with pytest.raises(DataError, match='does not match sha256'): load_corpus('tinyshakespeare')

def test_download_checks_sha256(tmp_path):
    src = tmp_path/'src.txt'; src.write_bytes(b'hello')
    good = hashlib.sha256(b'hello').hexdigest()
    download(src.as_uri(), tmp_path/'a.txt', good)
    assert (tmp_path/'a.txt').read_bytes() == b'hello'
    with pytest.raises(DataError, match='was not kept'): download(src.as_uri(), tmp_path/'b.txt', '0' * 64)
    assert not (tmp_path/'b.txt').exists()

# ---- samplers: tensors and memmaps, random and sequential, exact resume ----
import gzip, threading, functools, http.server, os
from pathlib import Path
import numpy as np, torch
from llmtrain.core import ConfigError
from llmtrain.data import (RandomWindows, SequentialWindows, eval_windows, read_idx, load_mnist, load_fashion_mnist, fetch,
                           load_digits, image_stats, normalize_images, MNIST_SHA256)

def test_random_windows_same_batches_from_tensor_and_memmap(tmp_path):
    ids = np.random.default_rng(0).integers(0, 50000, 10_000).astype(np.uint16)
    ids.tofile(tmp_path/'t.bin')
    mm = np.memmap(tmp_path/'t.bin', dtype=np.uint16, mode='r')
    t = torch.from_numpy(ids.astype(np.int32))
    for rank in (0, 1):
        a, b = RandomWindows(t, 32, 6, seed=11, rank=rank, world=2), RandomWindows(mm, 32, 6, seed=11, rank=rank, world=2)
        for _ in range(4):
            (xa, ya), (xb, yb) = next(a), next(b)
            assert torch.equal(xa, xb) and torch.equal(ya, yb) and xb.dtype == torch.long
        st = b.state_dict(); nxt = next(b)
        b.load_state_dict(st); assert torch.equal(next(b)[0], nxt[0])
    ea, eb = eval_windows(t, 32, 6, 3), eval_windows(mm, 32, 6, 3)
    assert all(torch.equal(u[0], v[0]) and torch.equal(u[1], v[1]) for u, v in zip(ea, eb))

def test_sequential_windows_epochs_cover_every_window_once():
    toks = torch.arange(1001)
    s = SequentialWindows(toks, block_size=10, batch_size=7, seed=0)
    assert s.n_windows == 100 and len(s) == 14
    for epoch in range(2):
        starts = torch.cat([next(s)[0][:, 0] for _ in range(len(s))])
        assert len(set(starts.tolist())) == 98 and (starts % 10 == 0).all() and s.epoch == epoch
    x, y = next(s)
    assert s.epoch == 2 and torch.equal(y[:, :-1], x[:, 1:])
    orders = [torch.cat([next(SequentialWindows(toks, 10, 7, seed=k))[0][:, 0]]) for k in (0, 1)]
    assert not torch.equal(*orders)                                           # the seed sets the order

@pytest.mark.parametrize('steps', [0, 3, 14, 15, 40])
def test_sequential_windows_resume_exactly(steps):
    toks = torch.arange(1001)
    a = SequentialWindows(toks, 10, 7, seed=5)
    for _ in range(steps): next(a)
    st = a.state_dict()
    ref = [next(a)[0] for _ in range(20)]
    b = SequentialWindows(toks, 10, 7, seed=123)
    b.load_state_dict(st)
    assert all(torch.equal(u, v) for u, v in zip(ref, [next(b)[0] for _ in range(20)]))

def test_sequential_windows_ranks_split_the_global_batch_disjointly():
    toks = torch.arange(801)
    ranks = [SequentialWindows(toks, 8, 4, seed=2, rank=r, world=3) for r in range(3)]
    one = SequentialWindows(toks, 8, 12, seed=2)
    assert len(ranks[0]) == len(one) == 8
    for _ in range(len(one)):
        parts = [next(r)[0] for r in ranks]
        assert torch.equal(torch.cat(parts), next(one)[0])
    with pytest.raises(ConfigError, match='0 <= rank < world'): RandomWindows(toks, 8, 4, rank=3, world=3)
    with pytest.raises(DataError, match='fewer than one global batch'): SequentialWindows(toks[:50], 8, 4, world=3)

def test_sequential_windows_in_order_for_evaluation():
    s = SequentialWindows(torch.arange(101), 10, 3, shuffle=False)
    assert torch.cat([next(s)[0][:, 0] for _ in range(len(s))]).tolist() == list(range(0, 90, 10))

# ---- image data ----
def write_idx(path, arr, gz=False):
    b = bytes([0, 0, 8, arr.ndim]) + b''.join(d.to_bytes(4, 'big') for d in arr.shape) + arr.tobytes()
    Path(path).write_bytes(gzip.compress(b) if gz else b)

def test_read_idx_raw_gzip_and_damage(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (4, 5, 6), dtype=np.uint8)
    write_idx(tmp_path/'a', a); write_idx(tmp_path/'a.gz', a, gz=True)
    assert np.array_equal(read_idx(tmp_path/'a'), a) and np.array_equal(read_idx(tmp_path/'a.gz'), a)
    (tmp_path/'cut').write_bytes((tmp_path/'a').read_bytes()[:-1])
    with pytest.raises(DataError, match='cut is truncated or padded.*download it again'): read_idx(tmp_path/'cut')
    (tmp_path/'pad').write_bytes((tmp_path/'a').read_bytes() + b'\0')
    with pytest.raises(DataError, match='truncated or padded'): read_idx(tmp_path/'pad')
    (tmp_path/'gzcut.gz').write_bytes((tmp_path/'a.gz').read_bytes()[:-10])
    with pytest.raises(DataError, match='damaged gzip'): read_idx(tmp_path/'gzcut.gz')
    (tmp_path/'magic').write_bytes(b'\x00\x00\x0b\x01' + bytes(8))
    with pytest.raises(DataError, match='bad magic number'): read_idx(tmp_path/'magic')
    with pytest.raises(DataError, match='No IDX file'): read_idx(tmp_path/'none')

class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a): pass

@pytest.fixture
def mirror():
    "Start HTTP servers on 127.0.0.1 serving given folders; yields a function folder -> base url."
    servers = []
    def serve(folder):
        srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(_Quiet, directory=str(folder)))
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f'http://127.0.0.1:{srv.server_address[1]}/'
    yield serve
    for s in servers: s.shutdown(); s.server_close()

def test_load_mnist_mirrors_sha256_and_cache(tmp_path, monkeypatch, mirror):
    monkeypatch.setenv('LLMTRAIN_CACHE', str(tmp_path/'cache'))
    good, bad = tmp_path/'good', tmp_path/'bad'
    good.mkdir(); bad.mkdir()
    rng = np.random.default_rng(3)
    x = {s: rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for s, n in (('train', 9), ('t10k', 4))}
    y = {s: rng.integers(0, 10, len(v), dtype=np.uint8) for s, v in x.items()}
    for s in x:
        write_idx(good/f'{s}-images-idx3-ubyte.gz', x[s], gz=True); write_idx(good/f'{s}-labels-idx1-ubyte.gz', y[s], gz=True)
        write_idx(bad/f'{s}-images-idx3-ubyte.gz', x[s][:1], gz=True)                 # a mirror with a wrong file
    sha = {f.name: sha256_file(f) for f in good.iterdir()}
    assert set(sha) == set(MNIST_SHA256)
    with pytest.raises(CorpusNotFoundError) as e: load_mnist('train', mirrors=[mirror(bad)], sha256=sha)
    assert 'was not kept' in str(e.value) and str(tmp_path/'cache'/'mnist') in str(e.value)
    assert not any((tmp_path/'cache'/'mnist').glob('*'))                               # nothing cached
    mirrors = [(tmp_path/'absent').as_uri() + '/', mirror(bad), mirror(good)]
    for split, s in (('train', 'train'), ('test', 't10k')):
        xi, yi = load_mnist(split, mirrors=mirrors, sha256=sha)
        assert xi.shape == (len(x[s]), 1, 28, 28) and xi.dtype == torch.float32 and yi.dtype == torch.int64
        assert torch.allclose(xi[:, 0], torch.from_numpy(x[s]).float() / 255) and yi.tolist() == y[s].tolist()
    assert sorted(p.name for p in (tmp_path/'cache'/'mnist').iterdir()) == sorted(sha)
    xi, _ = load_mnist('test', mirrors=['http://127.0.0.1:9/'], sha256=sha)              # from the cache: no server needed
    assert len(xi) == 4
    p = tmp_path/'cache'/'mnist'/'t10k-labels-idx1-ubyte.gz'
    p.write_bytes(b'damaged')                                                            # a damaged cached file is fetched again
    assert load_mnist('test', mirrors=[mirror(good)], sha256=sha)[1].tolist() == y['t10k'].tolist()
    with pytest.raises(ConfigError, match="use 'train' or 'test'"): load_mnist('val')
    with pytest.raises(ConfigError, match="use 'train' or 'test'"): load_fashion_mnist('val')

def test_load_digits_and_normalisation():
    xtr, ytr = load_digits('train'); xte, yte = load_digits('test')
    assert xtr.shape == (1437, 1, 8, 8) and xte.shape == (360, 1, 8, 8) and xtr.dtype == torch.float32
    assert ytr.dtype == torch.int64 and float(xtr.min()) == 0 and float(xtr.max()) == 1
    full = torch.bincount(torch.cat([ytr, yte]))
    assert ((torch.bincount(yte) - 0.2 * full).abs() <= 1).all()
    a, b = load_digits('test', seed=1)[0], load_digits('test', seed=1)[0]
    assert torch.equal(a, b) and not torch.equal(a, xte)
    m, s = image_stats(xtr)
    z = normalize_images(xte, m, s)
    assert abs(normalize_images(xtr, m, s).mean().item()) < 1e-5 and z.shape == xte.shape
    with pytest.raises(DataError, match='standard deviation 0'): normalize_images(xtr, 0, 0)
    with pytest.raises(ConfigError, match='strictly between'): load_digits('train', test_fraction=0)
