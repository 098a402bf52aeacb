"""Unit and property tests of llmtrain.preprocessing: cleaning steps, the three tokenizers, save/load, bad input."""
import json, re, warnings
import numpy as np
import pytest
from hypothesis import given, example, settings, strategies as st, HealthCheck
from pydoc_data.topics import topics

from llmtrain.core import ConfigError, DataError
from llmtrain.preprocessing import (
    strip_html, normalize_unicode, remove_punctuation, remove_stopwords, segment_zh, fold_whitespace, lowercase,
    Cleaner, clean, CLASSIC_STEPS, LM_STEPS, SKIP_TAGS, ENGLISH_STOP_WORDS, CHINESE_STOP_WORDS,
    Tokenizer, CharTokenizer, WordTokenizer, BPETokenizer, VocabSizeWarning, WORD_PATTERN, TOKENIZERS,
    train_tokenizer, save_tokenizer, load_tokenizer, tokenizer_stats, _text_chunks)

PROPS = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
DOC = '\n\n'.join(topics[k].strip() for k in sorted(topics))[:120_000]      # real English, no cache needed
ALPHABET = 'abc XYZ\n\t,.!?你好世界。，🙂🎉é\u0301\x00'
CHAR = CharTokenizer.train(ALPHABET)
CHAR_SP = CharTokenizer.train(ALPHABET, special_tokens=['<eos>'])
with warnings.catch_warnings():
    warnings.simplefilter('error')                                           # no clamp at this size
    BPE = BPETokenizer.train(DOC, vocab_size=800)

# ---------------------------------------------------------------- cleaning

def test_html_drops_scripts_styles_comments_and_decodes_entities():
    page = ('<html><head><title>T</title><style>p>b{color:red}</style><script>if (a<b && c>d) {x("<p>no</p>")}'
            '</script></head><body><!-- <p>hidden</p> --><p title="a > b">&lt;b&gt; is &amp;amp; &#x4e2d;&#25991;'
            '&nbsp;ok</p><template><p>tpl</p></template><noscript>js off</noscript></body></html>')
    out = strip_html(page)
    assert out == 'T\n\n<b> is &amp; 中文\xa0ok'
    for leaked in ['color', 'no</p>', 'hidden', 'tpl', 'js off', 'a > b']: assert leaked not in out
    # the decoded "<b>" stays text: running the parser again would read it as a tag, which is why it runs once
    assert strip_html('<p>a</p>\n\n\n<p>b</p><div>c</div>d<br>e<ul><li>f</li></ul>') == 'a\n\nb\n\nc\nd\ne\n\nf'

def test_html_pre_keeps_lines_and_indentation_and_inline_tags_do_not_break_words():
    assert strip_html('<pre>  x = 1\n\n      y</pre>') == '  x = 1\n\n      y'
    assert strip_html('<p>Py<b>thon</b>   is\n  <i>fun</i></p>') == 'Python is fun'
    assert strip_html('<nav>menu</nav><p>x</p>', skip_tags=SKIP_TAGS + ('nav',)) == 'x'
    assert strip_html('unclosed <b>bold') == 'unclosed bold'

def test_html_on_a_rebuilt_pydoc_page_keeps_every_word():
    import html
    body = topics['while'].strip()
    page = f'<html><body><script>var x = "<p>";</script>' + ''.join(
        f'<p>{html.escape(b)}</p>' for b in body.split('\n\n')) + '</body></html>'
    assert strip_html(page).split() == body.split()

def test_nfkc_folds_full_width_ascii_and_compatibility_characters():
    for c in range(0x21, 0x7f): assert normalize_unicode(chr(c + 0xFEE0)) == chr(c)     # every full-width ASCII form
    assert normalize_unicode('\u3000ﬁ①²㎏\u212b') == ' fi12kg\xc5'
    assert normalize_unicode('e\u0301', 'NFC') == 'é' and normalize_unicode('²', 'NFC') == '²'
    with pytest.raises(ConfigError, match='is not one of'): normalize_unicode('x', 'nfkc')

def test_punctuation_is_unicode_aware():
    zh = '，。、；：？！“”‘’（）《》【】…—·「」'
    assert remove_punctuation(zh, repl='') == ''
    assert remove_punctuation('模型，训练。', repl='') == '模型训练'
    assert remove_punctuation('a-b_c (d)! ¿e?') == 'a b c  d    e '
    assert remove_punctuation("it's", keep="'") == "it's"
    assert remove_punctuation('$5 + 1 🙂') == '$5 + 1 🙂'
    assert remove_punctuation('$5 + 1 🙂', repl='', symbols=True) == '5  1 '

def test_stop_words_english_and_chinese():
    assert fold_whitespace(remove_stopwords('The cat is NOT on the mat, isn\'t it?', lang='en'), newlines=False) == 'cat mat, ?'
    assert remove_stopwords('他们的模型和数据', lang='zh') == '模型数据'
    assert remove_stopwords('目的存在于向量', lang='zh') == '目的存在向量'          # kept words are matched whole
    assert segment_zh('我们的目的') == ['我们', '的', '目的']
    assert segment_zh('abc的') == ['a', 'b', 'c', '的']
    assert remove_stopwords('the 的', lang='en') == ' 的' and remove_stopwords('the 的', lang='zh') == 'the '
    assert remove_stopwords('foo bar', stopwords={'FOO'}) == ' bar'
    assert {'the', 'not', "don't"} <= ENGLISH_STOP_WORDS and {'的', '是', '我们'} <= CHINESE_STOP_WORDS
    with pytest.raises(ConfigError): remove_stopwords('x', lang='de')

def test_whitespace_and_case():
    assert fold_whitespace('a  b\t\tc  \r\n\r\n\r\n\r\n  d  e\u3000') == 'a b c\n\n  d e'
    assert fold_whitespace('  a\n  b', indent=False) == 'a\nb'
    assert fold_whitespace(' a \n\n b ', newlines=False) == 'a b'
    assert lowercase('ÀB Ω') == 'àb ω'

def test_cleaner_composes_in_order_and_traces():
    page = '<p>Ｔｈｅ  model&#39;s ＡＣＣＵＲＡＣＹ is not 99%!</p><script>x()</script>'
    assert clean(page) == "The model's ACCURACY is not 99%!"
    assert clean(page, CLASSIC_STEPS) == 'model s accuracy 99'                  # the classic pipeline's "model s"
    tr = Cleaner(CLASSIC_STEPS).trace(page)
    assert [n for n, _ in tr] == ['input', 'html', 'nfkc', 'lower', 'stopwords', 'punct', 'whitespace'] and tr[0][1] == page
    assert Cleaner(['lower', str.strip])('  AB ') == 'ab'
    assert Cleaner('lower')('AB') == 'ab'
    assert clean('模型的训练，需要数据！', CLASSIC_STEPS) == '模型训练 需要数据'
    assert LM_STEPS == ('html', 'nfkc', 'whitespace')

def test_cleaner_bad_input():
    with pytest.raises(ConfigError, match="Did you mean 'stopwords'"): Cleaner(['stopword'])
    with pytest.raises(ConfigError, match='its options are'): Cleaner([('html', {'tags': ()})])
    with pytest.raises(ConfigError, match='A cleaning step is'): Cleaner([None])
    with pytest.raises(DataError, match='decode bytes first'): clean(b'abc')
    with pytest.raises(DataError, match='got int'): strip_html(3)
    with pytest.raises(DataError, match='returned'): Cleaner([lambda s: 1])('x')

# ---------------------------------------------------------------- tokenizers: round trips

@PROPS
@given(st.text(alphabet=ALPHABET))
def test_char_round_trips_on_its_alphabet(s):
    ids = CHAR.encode(s)
    assert len(ids) == len(s) and all(0 <= i < CHAR.vocab_size for i in ids)
    assert CHAR.decode(ids) == s

@PROPS
@given(st.lists(st.one_of(st.text(alphabet=ALPHABET), st.just('<eos>'))).map(''.join))
def test_char_round_trips_with_special_tokens(s):
    ids = CHAR_SP.encode(s)
    assert CHAR_SP.decode(ids) == s
    assert ids.count(CHAR_SP.special_tokens['<eos>']) == s.count('<eos>')

@PROPS
@given(st.text(alphabet=st.characters(exclude_characters='<', exclude_categories=('Cs',))))
def test_char_unseen_policy(s):
    seen = set(ALPHABET)
    if all(c in seen for c in s): assert CHAR.decode(CHAR.encode(s)) == s
    else:
        with pytest.raises(DataError, match="not in the tokenizer's alphabet"): CHAR.encode(s)
    tok = CharTokenizer.train(ALPHABET, unk='<unk>')
    assert tok.decode(tok.encode(s)) == ''.join(c if c in seen else '<unk>' for c in s)

@PROPS
@given(st.text())
def test_bpe_round_trips_any_text(s):
    ids = BPE.encode(s)
    assert BPE.decode(ids) == s
    assert sum(len(BPE.token_bytes(i)) for i in ids) == len(s.encode('utf-8'))

@PROPS
@given(st.lists(st.one_of(st.text(), st.just('<|endoftext|>'))).map(''.join))
def test_bpe_round_trips_with_special_tokens(s):
    assert BPE.decode(BPE.encode(s)) == s

PIECES = ['a', 'b', 'the', ' ', '  ', '\n', '\n\n', '\r\n', '\t', '\x0b', '.', '):', 'é', '中', '🙂', '<|endoftext|>']

@PROPS
@example('a\n\n\nb\n \n\nc', 1)
@given(st.lists(st.sampled_from(PIECES), max_size=120).map(''.join), st.integers(1, 12))
def test_bpe_chunked_encoding_equals_whole_encoding(s, size):
    chunks = _text_chunks(s, size)
    assert ''.join(chunks) == s
    assert [i for c in chunks for i in BPE.hf.encode(c, add_special_tokens=False).ids] == \
           BPE.hf.encode(s, add_special_tokens=False).ids

def test_bpe_on_real_text_and_scripts_it_never_saw():
    text = '\n\n'.join(topics[k] for k in ['for', 'while', 'with'])
    assert BPE.encode(text) == BPE.hf.encode(text, add_special_tokens=False).ids
    assert 2.5 < len(text.encode()) / len(BPE.encode(text)) < 6                # English: several bytes per token
    zh = '大模型的训练数据通常是海量文本数据'
    assert len(BPE.encode(zh)) == len(zh.encode()) and BPE.decode(BPE.encode(zh)) == zh   # one token per byte
    assert {BPE.token_bytes(i) for i in range(BPE.vocab_size)} >= {bytes([b]) for b in range(256)}
    assert BPE.tokens(' the statement') == [' the', ' statement']

# ---------------------------------------------------------------- BPE encoding through tiktoken

SEED_ZH = '> 大模型、模型训练、优化流程、生产效率、深度学习、Transformer、数据处理、资源管理\n\n## 1. 背景介绍\n\n近年来，深度学习技术取得了飞速发展，大规模语言模型（LLM）的出现更是掀起了人工智能领域的全新浪潮。这些模型，例如GPT-3、LaMDA和BERT，展现出惊人的文本生成、理解和翻译能力，在自然语言处理、机器翻译、代码生成等领域取得了突破性进展。然而，训练和部署这些庞大模型也面临着巨大的挑战，包括海量数据需求、高昂的计算成本和复杂的训练流程。\n\n为了应对这些挑战，研究者们不断探索优化大模型训练流程和提高生产效率的方法。本文将深入探讨大模型的训练过程，分析其关键环节，并提出一些优化策略，帮助读者更好地理解和构建高效的模型训练系统。'   # the seed's section 1

def _hf_ids(tok, s): return tok.hf.encode(s, add_special_tokens=False).ids

def test_bpe_encodes_with_tiktoken_and_gives_the_hf_ids():
    "The tiktoken twin of a trained byte-level BPE gives the ids of Hugging Face tokenizers on a sample of every kind of text."
    mixed = BPETokenizer.train(DOC[:60_000] + SEED_ZH * 5 + '🙂🙃👍🏽 ' * 20 + '\t\t  \n\n\n' * 20, vocab_size=1200)
    sample = [DOC[:40_000], SEED_ZH, '\n\n'.join(topics[k] for k in ['for', 'with']),
              'def f(x):\n\t\treturn {"k": [1, 2_000, 3.5e-3]}  # 注释\r\n\n\n   \n    pass\n',
              'emoji 🙂🙃👍🏽 family 👨\u200d👩\u200d👧 flags 🇫🇷🇨🇳', ' ' * 17 + '\t\t\n\n\u3000 x\xa0y  \x0b\x0c end   ',
              "it's we'll THEY'RE 'tis don't", '<|endoftext|>a<|endoftext|><|endoftext|> b\n<|endoftext|>', 'x<|endoftext', '']
    for tok in (BPE, mixed):
        assert tok.fast is not None and type(tok.fast).__module__.startswith('tiktoken')
        for s in sample:
            assert tok.encode(s) == _hf_ids(tok, s), s[:60]
            assert tok.encode_array(s, dtype=np.uint16).tolist() == _hf_ids(tok, s)
    assert mixed.encode('<|endoftext|>') == [0] and len(mixed.encode(SEED_ZH)) < len(SEED_ZH.encode()) / 2   # learned Chinese merges
    with pytest.raises(DataError, match='lone surrogate'): BPE.encode('a\udc80')
    with pytest.raises(DataError, match='lone surrogate'): BPE.encode_array('a\udc80')

@PROPS
@given(st.lists(st.sampled_from(PIECES + ['ab', "'s", "'ll", '1', '23', '🙂🙃', '\u3000', '\xa0']), max_size=80).map(''.join))
def test_bpe_tiktoken_equals_hf_on_generated_text(s):
    assert BPE.encode(s) == _hf_ids(BPE, s)

def test_bpe_without_a_tiktoken_twin_still_encodes():
    "A loaded tokenizer outside tiktoken's model (here: with a normalizer) is encoded by tokenizers itself."
    import tokenizers
    from llmtrain.preprocessing import tiktoken_encoding
    hf = tokenizers.Tokenizer.from_str(BPE.hf.to_str()); hf.normalizer = tokenizers.normalizers.NFKC()
    tok = BPETokenizer(hf)
    assert tiktoken_encoding(hf) is None and tok.fast is None
    assert tok.encode('ﬁne 中文') == _hf_ids(tok, 'ﬁne 中文')
    assert load_tokenizer_roundtrip(BPE).fast is not None

def load_tokenizer_roundtrip(tok):
    return BPETokenizer.from_dict(json.loads(json.dumps(tok.to_dict())))

@PROPS
@given(st.text())
def test_word_round_trips_text_it_was_trained_on(s):
    assert ''.join(re.findall(WORD_PATTERN, s)) == s                           # the pieces cover every character
    if not s.replace('<unk>', ''): return                                      # nothing to train on
    tok = WordTokenizer.train(s)
    assert tok.decode(tok.encode(s)) == s

@PROPS
@given(st.text(alphabet='ab c\n.,猫', max_size=80), st.text(alphabet='ab cd\n.,猫狗', max_size=80), st.integers(2, 8))
def test_word_unknown_policy(train_text, text, n):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', VocabSizeWarning)                     # fewer distinct words than n: a clamp
        tok = WordTokenizer.train(train_text + 'z', vocab_size=n)
    assert tok.vocab_size <= n
    vocab = set(tok.itos)
    pieces = re.findall(WORD_PATTERN, text)
    assert tok.decode(tok.encode(text)) == ''.join(p if p in vocab else '<unk>' for p in pieces)

def test_word_vocabulary_is_the_top_n():
    text = DOC
    counts = {}
    for p in re.findall(WORD_PATTERN, text): counts[p] = counts.get(p, 0) + 1
    tok = WordTokenizer.train(text, vocab_size=500)
    assert tok.vocab_size == 500 and tok.itos[0] == '<unk>' and tok.special_tokens == {'<unk>': 0}
    kept = set(tok.words)
    assert min(counts[w] for w in kept) >= max(c for w, c in counts.items() if w not in kept)
    assert tok.encode(' zyzzyva') == [0]
    strict = WordTokenizer.train('a b a', unk=None)
    assert strict.special_tokens == {} and strict.decode(strict.encode('a b')) == 'a b'
    with pytest.raises(DataError, match='not in the vocabulary'): strict.encode('a c')

# ---------------------------------------------------------------- the interface, factory, vocabulary sizes

@pytest.mark.parametrize('kind', list(TOKENIZERS))
def test_one_interface(kind):
    tok = train_tokenizer(kind, DOC[:30_000], vocab_size=None if kind != 'bpe' else 400)
    assert isinstance(tok, Tokenizer) and tok.kind == kind and len(tok) == tok.vocab_size
    s = DOC[:DOC.index(' ', 500)]                                               # whole words
    ids = tok.encode(s)
    assert isinstance(ids, list) and all(type(i) is int for i in ids)
    assert tok.decode(ids) == s and tok.decode(np.array(ids)) == s
    for i in range(0, tok.vocab_size, 7):
        assert tok.token_to_id(tok.id_to_token(i)) == i
    assert all(0 <= i < tok.vocab_size for i in tok.special_tokens.values())
    assert ''.join(tok.tokens(s)) == s
    with pytest.raises(DataError, match='outside this tokenizer'): tok.decode([tok.vocab_size])
    with pytest.raises(DataError, match='outside this tokenizer'): tok.decode([-1])
    with pytest.raises(DataError, match='decode each row'): tok.decode([[1, 2]])
    with pytest.raises(DataError, match='decode bytes first'): tok.encode(b'abc')
    with pytest.raises(DataError, match='lone surrogate'): tok.encode('a\ud800b')
    with pytest.raises(DataError, match='lone surrogate'): train_tokenizer(kind, 'abc\udc80')

def test_vocab_size_clamps_with_a_warning_and_too_small_raises():
    for kind, asked in [('char', 50), ('word', 50), ('bpe', 5000)]:
        with pytest.warns(VocabSizeWarning, match=f'vocab_size={asked} is more than'):
            tok = train_tokenizer(kind, 'hello world, hello', vocab_size=asked)
        assert tok.vocab_size < asked
    assert train_tokenizer('char', 'hello', vocab_size=4).chars == list('ehlo')                # exactly the alphabet
    small = train_tokenizer('char', 'hello', vocab_size=3)                     # l, then e (ties by code point), + <unk>
    assert (small.chars, small.vocab_size, small.decode(small.encode('hello'))) == (['e', 'l'], 3, '<unk>ell<unk>')
    with pytest.raises(DataError, match='use at least 257'): train_tokenizer('bpe', DOC, vocab_size=256)
    with pytest.raises(DataError, match='use at least 2'): train_tokenizer('word', DOC, vocab_size=1)
    with pytest.raises(DataError, match='use at least 3'): train_tokenizer('char', DOC, vocab_size=2, special_tokens=['<s>'])

def test_char_vocab_size_keeps_the_most_frequent_characters():
    tok = train_tokenizer('char', 'aaaa bbb cc d', vocab_size=4)
    assert tok.chars == [' ', 'a', 'b'] and tok.unk == '<unk>' and tok.vocab_size == 4
    assert tok.decode(tok.encode('abcd')) == 'ab<unk><unk>'

def test_factory_bad_input():
    with pytest.raises(ConfigError, match="Did you mean 'char'"): train_tokenizer('chars', 'abc')
    with pytest.raises(ConfigError, match='positive integer'): train_tokenizer('bpe', 'abc', vocab_size=-5)
    with pytest.raises(ConfigError, match='positive integer'): train_tokenizer('bpe', 'abc', vocab_size=True)
    with pytest.raises(ConfigError, match="no option 'min_freq'"): train_tokenizer('bpe', 'abc', min_freq=2)
    with pytest.raises(ConfigError, match='special token'): train_tokenizer('word', 'abc', special_tokens=[''])
    with pytest.raises(DataError, match='empty text'): train_tokenizer('bpe', '')
    with pytest.raises(DataError, match='decode bytes first'): train_tokenizer('char', b'abc')
    with pytest.raises(DataError, match='single characters'): CharTokenizer(['ab'])

# ---------------------------------------------------------------- save / load

@pytest.mark.parametrize('kind,opts', [('char', {}), ('char', dict(unk='<unk>', special_tokens=['<eos>'])),
                                       ('word', dict(vocab_size=300)), ('word', dict(unk=None)),
                                       ('bpe', dict(vocab_size=500, special_tokens=['<|endoftext|>', '<pad>']))])
def test_save_load_every_kind(tmp_path, kind, opts):
    text = DOC[:20_000]
    tok = train_tokenizer(kind, text, **opts)
    path = tok.save(tmp_path/'run'/'tokenizer.json')
    for loaded in (load_tokenizer(path), load_tokenizer(tmp_path/'run'), Tokenizer.load(path)):
        assert type(loaded) is type(tok) and loaded.to_dict() == tok.to_dict()
        assert loaded.encode(text[:3000]) == tok.encode(text[:3000]) and loaded.special_tokens == tok.special_tokens
    json.loads(path.read_text(encoding='utf-8'))                              # plain JSON

def test_char_file_format_stays_readable(tmp_path):
    tok = CharTokenizer.train('héllo 你好')
    save_tokenizer(tok, tmp_path/'t.json')
    assert json.loads((tmp_path/'t.json').read_text(encoding='utf-8')) == {'kind': 'char', 'chars': sorted(set('héllo 你好'))}
    (tmp_path/'old.json').write_text(json.dumps({'kind': 'char', 'chars': list('ab')}))
    assert load_tokenizer(tmp_path/'old.json').decode([0, 1]) == 'ab'

def test_load_bad_files(tmp_path):
    (tmp_path/'hf.json').write_text(BPE.hf.to_str())
    assert load_tokenizer(tmp_path/'hf.json').encode('the cat') == BPE.encode('the cat')
    cases = {'trunc.json': ('{"kind": "bpe"', 'not valid JSON'), 'kind.json': ('{"kind": "sentencepiece"}', 'unknown tokenizer kind'),
             'list.json': ('[1, 2]', 'unknown tokenizer kind'), 'fields.json': ('{"kind": "word", "words": []}', 'missing or broken'),
             'hfbad.json': ('{"kind": "bpe", "tokenizers": {"model": 3}}', 'missing or broken')}
    for name, (content, msg) in cases.items():
        (tmp_path/name).write_text(content)
        with pytest.raises(DataError, match=msg): load_tokenizer(tmp_path/name)
    with pytest.raises(DataError, match='No tokenizer file'): load_tokenizer(tmp_path/'missing.json')
    with pytest.raises(DataError, match='Cannot save'): save_tokenizer('abc', tmp_path/'x.json')

# ---------------------------------------------------------------- stats and the data layer

def test_tokenizer_stats_and_encode_corpus_with_any_kind():
    from llmtrain.data import encode_corpus
    text = DOC[:5000]
    s = tokenizer_stats(BPE, text, repeat=1)
    assert s['round_trip'] and s['unk_rate'] == 0 and s['encode_MBps'] > 0
    assert s['tokens'] == len(BPE.encode(text)) and s['bytes_per_token'] == len(text.encode()) / s['tokens']
    w = tokenizer_stats(WordTokenizer.train(text, vocab_size=50), DOC[5000:10000], repeat=1)
    assert 0 < w['unk_rate'] < 1 and not w['round_trip']
    for kind in TOKENIZERS:
        tok = train_tokenizer(kind, DOC[:20_000], vocab_size=300 if kind == 'bpe' else None)
        d = encode_corpus(DOC[:20_000], tokenizer=tok, val_fraction=0.1)
        assert d.train.dtype.is_floating_point is False and int(d.train.max()) < tok.vocab_size
        assert tok.decode(d.train.tolist() + d.val.tolist()) == DOC[:20_000]

# ---------------------------------------------------------------- arrays for token shards

@PROPS
@given(st.text(alphabet=ALPHABET, max_size=300))
def test_encode_array_is_encode_as_an_array(text):
    for tok in (CHAR, CHAR_SP, BPE):
        a = tok.encode_array(text + '<eos>' if tok is CHAR_SP else text, dtype=np.uint16)
        assert a.dtype == np.uint16 and a.tolist() == tok.encode(text + '<eos>' if tok is CHAR_SP else text)
    assert CHAR.encode_array('').shape == (0,) and BPE.encode_array('').shape == (0,)

def test_char_tokenizer_from_counts_of_pieces_is_train_on_the_whole():
    pieces = [DOC[:50_000], DOC[50_000:], '你好🙂\n']
    whole = ''.join(pieces)
    counts = np.zeros(0, np.int64)
    for p in pieces:
        c = np.bincount(np.frombuffer(p.encode('utf-32-le'), dtype='<u4'))
        counts = np.pad(counts, (0, max(0, len(c) - len(counts)))); counts[:len(c)] += c
    for n in (None, 40):
        a, b = CharTokenizer.from_counts(counts, n), CharTokenizer.train(whole, n)
        assert a.to_dict() == b.to_dict()
    with pytest.raises(DataError, match='empty text'): CharTokenizer.from_counts(np.zeros(5, np.int64))
    with pytest.raises(DataError, match='empty text'): CharTokenizer.train('')
