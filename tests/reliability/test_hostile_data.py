"""Bad and hostile data: missing, empty, binary, truncated and non-UTF-8 corpora (in the library and through
`llmtrain train`, where no run folder may appear), truncated IDX files, and a download whose sha256 does not match,
served from a local HTTP server: rejected and not cached."""
import gzip, hashlib, http.server, threading, functools
import numpy as np
import pytest
from llmtrain.core import DataError, CorpusNotFoundError
from llmtrain import data as D
from relutil import TINY, run_cli, run_main

TEXT = 'naïve café, ünïcode: ' * 40

def corpora(tmp):
    "name -> (path, expected error class, words the message must hold)."
    c = {}
    def put(name, data, err, *words):
        p = tmp/name; p.write_bytes(data); c[name] = (p, err, words)
    put('empty.txt', b'', DataError, 'empty')
    put('blank.txt', b' \n\t\n' * 10, DataError, 'empty')
    put('binary.bin', bytes(range(256)) * 8, DataError, 'binary')
    enc = TEXT.encode()
    put('truncated.txt', enc[:enc.index('ï'.encode()) + 1], DataError, 'UTF-8', 'byte')       # cut inside a 2-byte character
    put('latin1.txt', TEXT.encode('latin-1'), DataError, 'UTF-8', 'byte')
    put('utf16.txt', TEXT.encode('utf-16'), DataError, 'binary')                                 # NUL bytes in ASCII halves
    c['missing.txt'] = (tmp/'missing.txt', CorpusNotFoundError, ('neither a registered name',))
    return c

def test_each_bad_corpus_raises_a_named_data_error(tmp_path):
    for name, (p, err, words) in corpora(tmp_path).items():
        with pytest.raises(err) as e: D.load_corpus(str(p))
        assert all(w in str(e.value) for w in words), (name, str(e.value))

def test_replace_reads_past_bad_bytes_when_asked(tmp_path):
    p = tmp_path/'latin1.txt'; p.write_bytes(TEXT.encode('latin-1'))
    assert '\ufffd' in D.load_corpus(str(p), errors='replace')

def test_llmtrain_train_refuses_each_bad_corpus_before_any_run_folder(tmp_path, capsys):
    bad = corpora(tmp_path)
    short = tmp_path/'short.txt'; short.write_text('too short')                    # fewer tokens than block_size + 1
    bad['short.txt'] = (short, DataError, ('too few for block_size',))
    for name, (p, err, words) in bad.items():
        out = tmp_path/'runs'/name
        rc, msg = run_main(capsys, 'train', *TINY, f'corpus={p}', f'out_dir={out}', 'name=r', 'max_iters=2')
        assert rc == 2 and all(w in msg for w in words), (name, rc, msg[-500:])
        assert not out.exists(), f"{name}: a run folder was created for a run that never started"
    r = run_cli('train', *TINY, f"corpus={bad['binary.bin'][0]}", f'out_dir={tmp_path/"runs"}')     # and as a real process
    assert r.returncode == 2 and 'binary' in r.stderr and 'Traceback' not in r.stderr, r.stderr[-1500:]
    assert not (tmp_path/'runs').exists()

def idx_bytes(arr):
    return bytes([0, 0, 8, arr.ndim]) + b''.join(int(d).to_bytes(4, 'big') for d in arr.shape) + arr.tobytes()

def test_truncated_and_damaged_idx_files_are_refused(tmp_path):
    a = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    raw = idx_bytes(a)
    (tmp_path/'ok.idx').write_bytes(raw)
    assert (D.read_idx(tmp_path/'ok.idx') == a).all()
    (tmp_path/'ok.gz').write_bytes(gzip.compress(raw))
    assert (D.read_idx(tmp_path/'ok.gz') == a).all()
    cases = {'short.idx': (raw[:-100], 'truncated'), 'header.idx': (raw[:6], 'truncated'), 'magic.idx': (b'\x00\x00\x09\x03' + raw[4:], 'magic'),
             'empty.idx': (b'', 'magic'), 'padded.idx': (raw + b'\0', 'padded'), 'cut.gz': (gzip.compress(raw)[:-20], 'gzip')}
    for name, (b, word) in cases.items():
        (tmp_path/name).write_bytes(b)
        with pytest.raises(DataError, match=word): D.read_idx(tmp_path/name)
    with pytest.raises(DataError): D.read_idx(tmp_path/'nowhere.idx')

@pytest.fixture
def server(tmp_path):
    "A local HTTP server on 127.0.0.1 serving tmp_path/www."
    www = tmp_path/'www'; www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield www, f'http://127.0.0.1:{httpd.server_address[1]}'
    httpd.shutdown(); httpd.server_close()

def test_download_with_a_wrong_sha256_is_rejected_and_not_cached(server, tmp_path, monkeypatch):
    www, url = server
    monkeypatch.setenv('LLMTRAIN_CACHE', str(tmp_path/'cache'))
    good = b'the real corpus\n' * 100
    (www/'corpus.txt').write_bytes(b'a tampered corpus\n' * 100)
    c = D.register_corpus(D.Corpus('reltest', 'reltest.txt', url=f'{url}/corpus.txt', sha256=hashlib.sha256(good).hexdigest()))
    try:
        with pytest.raises(DataError, match='sha256') as e: D.load_corpus('reltest')
        assert 'not kept' in str(e.value)
        cached = tmp_path/'cache'/'corpora'
        assert not [p for p in cached.iterdir()] if cached.exists() else True       # nothing cached, no temp file
        (www/'corpus.txt').write_bytes(good)                          # the server is fixed: the same call now works
        assert D.load_corpus('reltest') == good.decode()
        assert D.sha256_file(cached/'reltest.txt') == c.sha256
        (www/'corpus.txt').write_bytes(good[:-7])                    # a truncated download never replaces the good copy
        (cached/'reltest.txt').unlink()
        with pytest.raises(DataError, match='sha256'): D.load_corpus('reltest')
        assert not (cached/'reltest.txt').exists()
    finally: D.CORPORA.pop('reltest', None)

def test_an_unreachable_download_says_where_to_put_the_file(server, tmp_path, monkeypatch):
    www, url = server
    monkeypatch.setenv('LLMTRAIN_CACHE', str(tmp_path/'cache'))
    D.register_corpus(D.Corpus('reltest404', 'reltest404.txt', url=f'{url}/nothing.txt', sha256='0' * 64))
    try:
        with pytest.raises(CorpusNotFoundError) as e: D.load_corpus('reltest404')
        assert str(tmp_path/'cache'/'corpora'/'reltest404.txt') in str(e.value)
    finally: D.CORPORA.pop('reltest404', None)
