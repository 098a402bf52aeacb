"""Token shards: the format, exact round trips, parallel = serial, atomic preparation, and every bad input."""
import json, os, subprocess, sys, textwrap
from pathlib import Path
import numpy as np, pytest, torch
from hypothesis import given, settings, strategies as st, HealthCheck
from llmtrain.core import LLMTrainError, ConfigError, DataError, CorpusNotFoundError
from llmtrain.data import RandomWindows, SequentialWindows, sha256_file, load_corpus
from llmtrain.preprocessing import BPETokenizer, CharTokenizer, load_tokenizer
from llmtrain.data import load_shards, is_shard_dir, read_shard_meta
from llmtrain.shards import (prepare_shards, iter_pieces, split_pieces, safe_cut,
                             SHARD_VERSION)

ROOT = Path(__file__).resolve().parents[1]

def corpus_text(n=3000):
    "Multi-line text with prose, code indentation, blank lines, CRLF, Chinese and emoji."
    rng = np.random.default_rng(0)
    words = ['the', 'model', 'def', 'return', '中文', '数据', '🙂', 'x=1;', '    ', 'é', '(a, b)', 'self.w']
    lines = []
    for i in range(n):
        k = rng.integers(0, 9)
        lines.append(' '.join(rng.choice(words, k)) + ('\r' if i % 97 == 0 else ''))
    return '\n'.join(lines) + '\n'

@pytest.fixture(scope='module')
def corpus_file(tmp_path_factory):
    p = tmp_path_factory.mktemp('c')/'corpus.txt'
    p.write_bytes(corpus_text().encode())
    return p

@pytest.mark.parametrize('kind', ['char', 'bpe', 'word'])
def test_shards_round_trip_and_format(corpus_file, tmp_path, kind):
    text = corpus_file.read_bytes().decode('utf-8')
    out = prepare_shards(corpus_file, tmp_path/'s', tokenizer=kind, vocab_size=300 if kind == 'bpe' else None,
                         chunk_bytes=1024, workers=2, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ['meta.json', 'tokenizer.json', 'train.bin', 'val.bin']
    meta = json.loads((out/'meta.json').read_text())
    assert meta['version'] == SHARD_VERSION and meta['dtype'] == 'uint16' and meta['val_fraction'] == 0.1
    assert meta['source']['bytes'] == corpus_file.stat().st_size == sum(meta['bytes'].values())
    for part in ('train', 'val'):
        assert (out/f'{part}.bin').stat().st_size == 2 * meta['tokens'][part]
        assert sha256_file(out/f'{part}.bin') == meta['sha256'][f'{part}.bin']
    d = load_shards(out, verify=True)
    assert isinstance(d.train, np.memmap) and not d.train.flags.writeable and d.train.dtype == np.uint16
    assert d.tokenizer.vocab_size == meta['tokenizer']['vocab_size']
    if kind != 'word':                                   # word: no unknown words here, but check ids against encode
        assert d.tokenizer.decode(d.train) + d.tokenizer.decode(d.val) == text
    whole = d.tokenizer.encode(text)                     # safe cuts: the pieces' ids are the ids of the whole text
    assert np.concatenate([d.train, d.val]).tolist() == whole
    val_share = meta['bytes']['val'] / meta['source']['bytes']
    assert 0.09 < val_share <= 0.1 + 0.01

def test_parallel_equals_serial_and_given_tokenizer(corpus_file, tmp_path):
    a = prepare_shards(corpus_file, tmp_path/'a', tokenizer='bpe', vocab_size=300, chunk_bytes=2048, workers=0, progress=False)
    tok = tmp_path/'a'/'tokenizer.json'
    b = prepare_shards(corpus_file, tmp_path/'b', tokenizer=tok, chunk_bytes=4096, workers=2, progress=False)
    assert read_shard_meta(a)['sha256'] == read_shard_meta(b)['sha256']
    with pytest.raises(ConfigError, match='keeps its own'):
        prepare_shards(corpus_file, tmp_path/'c', tokenizer=load_tokenizer(tok), vocab_size=10, progress=False)

def test_uint32_when_the_vocabulary_is_large(tmp_path):
    cps = list(range(0x4E00, 0x9FFF)) + list(range(0x3400, 0x4DBF)) + list(range(0x20000, 0x2A6DF))
    text = '\n'.join(''.join(map(chr, cps[i:i + 50])) for i in range(0, len(cps), 50)) + '\n'
    (tmp_path/'big.txt').write_text(text, encoding='utf-8')
    d = load_shards(prepare_shards(tmp_path/'big.txt', tmp_path/'s', progress=False))
    assert d.tokenizer.vocab_size > 65536 and d.train.dtype == np.uint32
    assert d.tokenizer.decode(d.train) + d.tokenizer.decode(d.val) == text

def test_samplers_read_memmap_shards_like_tensors(corpus_file, tmp_path):
    d = load_shards(prepare_shards(corpus_file, tmp_path/'s', progress=False))
    t = torch.from_numpy(np.asarray(d.train).astype(np.int64))
    for cls in (RandomWindows, SequentialWindows):
        a, b = cls(d.train, 32, 8, seed=4), cls(t, 32, 8, seed=4)
        for _ in range(5):
            (xa, ya), (xb, yb) = next(a), next(b)
            assert torch.equal(xa, xb) and torch.equal(ya, yb) and xa.dtype == torch.long

@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(text=st.text(st.characters(blacklist_categories=('Cs',), blacklist_characters='\x00'), max_size=3000), chunk=st.integers(1, 64),
       frac=st.floats(0, 1))
def test_pieces_cover_the_bytes_and_hold_whole_characters(tmp_path, text, chunk, frac):
    f = tmp_path/'h.txt'
    raw = text.encode('utf-8'); f.write_bytes(raw)
    pieces = list(iter_pieces([f], chunk_bytes=chunk))
    assert b''.join(b for *_, b in pieces) == raw
    for *_, b in pieces: b.decode('utf-8')
    tagged = list(split_pieces(pieces, int(len(raw) * frac)))
    assert b''.join(b for *_, b in tagged) == raw
    parts = [p for p, *_ in tagged]
    assert parts == sorted(parts)                        # all train pieces, then all val pieces

def test_interrupted_prepare_leaves_nothing_complete_and_rerun_finishes(corpus_file, tmp_path):
    out = tmp_path/'s'
    script = textwrap.dedent(f"""
        import os, llmtrain.shards as s
        real = os.replace
        os.replace = lambda a, b: os._exit(3) if str(b) == {str(out)!r} else real(a, b)   # die just before the final rename
        s.prepare_shards({str(corpus_file)!r}, {str(out)!r}, workers=2, progress=False)
    """)
    r = subprocess.run([sys.executable, '-c', script], env={**os.environ, 'PYTHONPATH': str(ROOT)})
    assert r.returncode == 3
    assert not out.exists() and not is_shard_dir(out) and (tmp_path/'.s.partial'/'meta.json').exists()
    prepare_shards(corpus_file, out, progress=False)
    assert is_shard_dir(out) and not (tmp_path/'.s.partial').exists()
    load_shards(out, verify=True)

def test_overwrite_policy(corpus_file, tmp_path):
    out = prepare_shards(corpus_file, tmp_path/'s', progress=False)
    with pytest.raises(DataError, match='overwrite=True'): prepare_shards(corpus_file, out, progress=False)
    prepare_shards(corpus_file, out, tokenizer='bpe', vocab_size=300, overwrite=True, progress=False)
    assert read_shard_meta(out)['tokenizer']['kind'] == 'bpe' and not (tmp_path/'.s.old').exists()
    (tmp_path/'other').mkdir(); (tmp_path/'other'/'keep.txt').write_text('x')
    with pytest.raises(DataError, match='not a shard folder'):
        prepare_shards(corpus_file, tmp_path/'other', overwrite=True, progress=False)
    assert (tmp_path/'other'/'keep.txt').exists()

def test_bad_corpora(tmp_path):
    def fails(path, match, **kw):
        with pytest.raises(LLMTrainError, match=match): prepare_shards(path, tmp_path/'out', progress=False, **kw)
        assert not (tmp_path/'out').exists() and not (tmp_path/'.out.partial').exists()
    (tmp_path/'latin1.txt').write_bytes('caf\xe9.\n'.encode('latin-1') * 100)
    fails(tmp_path/'latin1.txt', r"latin1.txt is not valid UTF-8 .*errors='replace'")
    d = load_shards(prepare_shards(tmp_path/'latin1.txt', tmp_path/'ok', errors='replace', progress=False))
    assert '\ufffd' in d.tokenizer.decode(d.train)
    (tmp_path/'bin.dat').write_bytes(b'\x7fELF\x00\x00' + bytes(1000))
    fails(tmp_path/'bin.dat', 'bin.dat looks binary')
    (tmp_path/'empty.txt').write_bytes(b'')
    fails(tmp_path/'empty.txt', 'is empty')
    (tmp_path/'blank.txt').write_text(' \n\n\t\n')
    fails(tmp_path/'blank.txt', 'only whitespace')
    fails(tmp_path/'blank.txt', 'only whitespace', tokenizer='bpe')
    fails(tmp_path/'nope.txt', 'neither a registered name')
    (tmp_path/'one.txt').write_text('a single line without a break')
    fails(tmp_path/'one.txt', 'too small to split off val_fraction')
    (tmp_path/'small.txt').write_text('hello world.\n' * 30)
    fails(tmp_path/'small.txt', r'vocab_size=100 is more than .* Pass vocab_size<=', vocab_size=100)
    fails(tmp_path/'small.txt', r'vocab_size<=', tokenizer='bpe', vocab_size=2000)
    fails(tmp_path/'small.txt', 'val_fraction', val_fraction=1.0)
    fails(tmp_path/'small.txt', 'errors=', errors='surrogateescape')
    fails(tmp_path/'small.txt', 'use one of char', tokenizer='sentencepiece')
    fails(tmp_path/'small.txt', 'workers', workers=-1)
    assert load_shards(prepare_shards(tmp_path/'small.txt', tmp_path/'nv', val_fraction=0, progress=False)).val.size == 0

def test_damaged_shards_are_refused(corpus_file, tmp_path):
    out = prepare_shards(corpus_file, tmp_path/'s', progress=False)
    fix = r'`llmtrain prepare .*corpus.txt .* --tokenizer char --overwrite`'
    v = out/'val.bin'; good = v.read_bytes()
    v.write_bytes(good[:-2])
    with pytest.raises(DataError, match='val.bin has .* truncated or changed; rerun ' + fix): load_shards(out)
    v.write_bytes(bytes([good[0] ^ 1]) + good[1:])                 # same size, other bytes: only sha256 sees it
    load_shards(out)
    with pytest.raises(DataError, match='does not match the sha256'): load_shards(out, verify=True)
    v.write_bytes(good); v.rename(out/'v')
    with pytest.raises(DataError, match='val.bin is missing'): load_shards(out)
    (out/'v').rename(v)
    meta = json.loads((out/'meta.json').read_text())
    (out/'meta.json').write_text(json.dumps({**meta, 'version': SHARD_VERSION + 1}))
    with pytest.raises(DataError, match='upgrade llmtrain'): load_shards(out)
    (out/'meta.json').write_text(json.dumps({**meta, 'tokenizer': {**meta['tokenizer'], 'vocab_size': 7}}))
    with pytest.raises(DataError, match='tokenizer.json has .* tokens but meta.json says 7'): load_shards(out)
    (out/'meta.json').write_text(json.dumps({k: v for k, v in meta.items() if k != 'tokens'}))
    with pytest.raises(DataError, match='lacks or garbles'): load_shards(out)
    (out/'meta.json').write_text('{not json')
    with pytest.raises(DataError, match='not valid JSON'): load_shards(out)
    assert not is_shard_dir(out)
    (out/'meta.json').unlink()
    with pytest.raises(DataError, match='not a finished shard folder'): load_shards(out)
    with pytest.raises(CorpusNotFoundError, match='No shard folder'): load_shards(tmp_path/'none')

def test_builtin_corpus_with_bpe_sample(tmp_path):
    out = prepare_shards('pydoc', tmp_path/'p', tokenizer='bpe', vocab_size=512, sample_bytes=100_000, chunk_bytes=1 << 16,
                         workers=2, progress=False)
    d = load_shards(out)
    text = load_corpus('pydoc')
    assert d.tokenizer.decode(d.train) + d.tokenizer.decode(d.val) == text
    assert len(text.encode()) / (len(d.train) + len(d.val)) > 2             # BPE compresses, even trained on a sample
