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
