"""llmtrain.generation: cache equality, sampling filters, reproducibility, stop strings, streaming."""
import math
import pytest, torch
from llmtrain.core import ConfigError
from llmtrain.models import GPT, GPTConfig, RNNLM, RNNConfig, LLAMA, KVCache
from llmtrain.preprocessing import train_tokenizer
import llmtrain.generation as G
from llmtrain.generation import (top_k_filter, top_p_filter, filter_logits, sample_token, cache_logit_error, generate_ids,
                                 generate_stream, generate_text, generation_panel, next_logits_fn)

def gpt(**kw):
    torch.manual_seed(0); return GPT(GPTConfig(block_size=32, n_layer=2, n_head=2, n_embd=32, **kw)).eval()

@pytest.mark.parametrize('make', [lambda: gpt(), lambda: gpt(**LLAMA),
                                  lambda: RNNLM(RNNConfig(n_layer=2, n_embd=32, cell='lstm')),
                                  lambda: RNNLM(RNNConfig(n_layer=1, n_embd=32, cell='gru'))], ids=['gpt', 'rope', 'lstm', 'gru'])
def test_cache_matches_recomputation(make):
    torch.manual_seed(1)
    m = make()
    ids = torch.randint(0, 65, (2, 30))
    assert cache_logit_error(m, ids, prompt_len=3) < 1e-5

def test_cache_check_catches_a_broken_cache(monkeypatch):
    class Forgetful(KVCache):
        def update(self, layer, k, v): super().update(layer, k, v); return k, v
    monkeypatch.setattr(G, 'KVCache', Forgetful)
    assert cache_logit_error(gpt(pos_emb='rope'), torch.randint(0, 65, (1, 20)), prompt_len=3) > 1e-3

def test_cache_slides_past_block_size():
    m = gpt()
    out = generate_ids(m, torch.zeros(1, 5, dtype=torch.long), 80, 1.0, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 85)

def test_top_k_keeps_exactly_k():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(8, 100, generator=g)
    for k in (1, 5, 37, 100, 500):
        kept = top_k_filter(z, k).isfinite()
        assert (kept.sum(-1) == min(k, 100)).all()
        assert (z[kept].view(8, -1).min(-1).values >= z[~kept].view(8, -1).max(-1).values).all() if k < 100 else True
    with pytest.raises(ConfigError, match='top_k'): top_k_filter(z, 0)

def test_top_p_hand_computed():
    p = torch.tensor([0.15, 0.5, 0.05, 0.2, 0.1])
    z = p.log()[None]
    kept = lambda q: top_p_filter(z, q).isfinite()[0].nonzero().flatten().tolist()
    assert kept(0.5) == [1]
    assert kept(0.6) == [1, 3]
    assert kept(0.69) == [1, 3]
    assert kept(0.71) == [0, 1, 3]
    assert kept(0.9) == [0, 1, 3, 4]
    assert kept(0.96) == [0, 1, 2, 3, 4]
    with pytest.raises(ConfigError, match='top_p'): top_p_filter(z, 1.2)

def test_top_p_minimal_set_random():
    g = torch.Generator().manual_seed(1)
    for _ in range(100):
        z = torch.randn(3, 40, generator=g) * 2
        q = float(torch.rand(1, generator=g)) * 0.95 + 0.02
        probs, keep = z.softmax(-1), top_p_filter(z, q).isfinite()
        for r in range(3):
            mass = probs[r][keep[r]].sum()
            assert mass >= q - 1e-6 and mass - probs[r][keep[r]].min() < q
            assert probs[r][keep[r]].min() >= probs[r][~keep[r]].max() if (~keep[r]).any() else True

def test_temperature_and_greedy():
    z = torch.tensor([[0.0, 2.0, 1.0]])
    assert sample_token(z, 0).item() == 1
    assert torch.allclose(filter_logits(z, 2.0), z / 2)
    with pytest.raises(ConfigError, match='temperature'): sample_token(z, -0.5)

def test_sampling_distribution_matches_filtered_softmax():
    z = torch.tensor([[0.0, 2.0, 1.0, -1.0, 1.5]])
    n = 20000
    draws = sample_token(z.expand(n, -1), 0.7, top_p=0.8, generator=torch.Generator().manual_seed(0)).flatten()
    freq, probs = torch.bincount(draws, minlength=5) / n, filter_logits(z, 0.7, top_p=0.8).softmax(-1)[0]
    assert ((freq - probs).abs() <= 4 * (probs * (1 - probs) / n).sqrt() + 1e-9).all()

@pytest.fixture(scope='module')
def lm():
    text = 'to be or not to be, that is the question.\n' * 20
    tok = train_tokenizer('char', text)
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=32)).eval(), tok

def test_seeded_reproducible(lm):
    m, tok = lm
    a = generate_text(m, tok, 'to', 60, temperature=1.0, seed=1)
    assert a == generate_text(m, tok, 'to', 60, temperature=1.0, seed=1)
    assert a != generate_text(m, tok, 'to', 60, temperature=1.0, seed=2)
    assert len(a) == 60
    assert generate_text(m, tok, 'to', 30, temperature=0, seed=1) == generate_text(m, tok, 'to', 30, temperature=0, seed=9)

def test_stream_concatenates_to_text(lm):
    m, tok = lm
    pieces = list(generate_stream(m, tok, 'to', 50, temperature=1.0, seed=3))
    assert len(pieces) > 1 and ''.join(pieces) == generate_text(m, tok, 'to', 50, temperature=1.0, seed=3)
    assert ''.join(pieces) == generate_text(m, tok, 'to', 50, temperature=1.0, seed=3, use_cache=False)

def test_stop_strings(lm):
    m, tok = lm
    full = generate_text(m, tok, 'to', 60, temperature=1.0, seed=4)
    stop = full[20:23]
    cut = generate_text(m, tok, 'to', 60, temperature=1.0, seed=4, stop=['zzz-not-there', stop])
    assert cut == full[:full.find(stop)] and stop not in cut
    pieces = list(generate_stream(m, tok, 'to', 60, temperature=1.0, seed=4, stop=stop))
    assert ''.join(pieces) == cut and all(stop not in p for p in pieces)
    assert generate_text(m, tok, 'to', 60, temperature=1.0, seed=4, stop='zzz-not-there') == full

class Scripted(torch.nn.Module):
    "Makes the next id of `script` certain: after n tokens of context, `script[n-1]`."
    recurrent = True
    def __init__(self, script, V):
        super().__init__(); self.script, self.V = script, V; self.w = torch.nn.Parameter(torch.zeros(1))
    def forward(self, idx, targets=None, cache=None):
        n = (cache.pos if cache is not None else 0) + idx.size(1)
        if cache is not None: cache.pos = n
        z = torch.full((idx.size(0), 1, self.V), -1e9); z[:, :, self.script[min(n - 1, len(self.script) - 1)]] = 0
        return z, None

def test_stream_holds_back_incomplete_utf8():
    bpe = train_tokenizer('bpe', 'plain ascii text, nothing else here. ' * 50, vocab_size=260)
    target = 'Caf\u00e9 \U0001F600 \u4f60\u597d!'
    ids = bpe.encode(target)
    assert any('\ufffd' in bpe.decode(ids[:i]) for i in range(1, len(ids)))
    pieces = list(generate_stream(Scripted(ids + [0] * 3, bpe.vocab_size), bpe, 'x', len(ids), temperature=0))
    assert ''.join(pieces) == target and not any('\ufffd' in p for p in pieces)

def test_stop_string_split_over_tokens():
    tok = train_tokenizer('char', 'abc\nxyz')
    text = 'ab\nc\n\nxyz'
    m = Scripted(tok.encode(text) + tok.encode('a') * 3, tok.vocab_size)
    pieces = list(generate_stream(m, tok, 'a', 20, temperature=0, stop='\n\n'))
    assert ''.join(pieces) == 'ab\nc' and pieces[-1] != '\n'

def test_end_of_text_token_stops():
    bpe = train_tokenizer('bpe', 'hello world. ' * 40, vocab_size=262)
    eot = bpe.special_tokens['<|endoftext|>']
    ids = bpe.encode('hello') + [eot] + bpe.encode(' world')
    assert generate_text(Scripted(ids, bpe.vocab_size), bpe, 'x', 20, temperature=0) == 'hello'

def test_clear_errors(lm):
    m, tok = lm
    with pytest.raises(ConfigError, match='prompt'): generate_text(m, tok, '', 5)
    with pytest.raises(ConfigError, match='max_new_tokens'): generate_text(m, tok, 'to', -3)
    with pytest.raises(ConfigError, match='top_p'): generate_text(m, tok, 'to', 5, top_p=0)

def test_panel_builds_and_runs(lm):
    m, tok = lm
    p = generation_panel(m, tok, 'to', max_new_tokens=20)
    p.run()
    assert p.children[-1].value == generate_text(m, tok, 'to', 20, temperature=0.8, seed=0)

# Greedy tokens of commit 19f4857's generate_ids (before the static cache and compiled steps) on these seeded models:
# 80 new tokens after a 3-token prompt, block 32, so the window slides twice.
OLD_GREEDY = {
    'gpt': [[33, 32, 3, 3, 33, 3, 2, 40, 2, 2, 40, 55, 42, 17, 41, 37, 3, 49, 50, 3, 38, 3, 4, 17, 3, 4, 40, 2, 49, 3, 49, 3, 3, 49,
             17, 10, 17, 49, 33, 49, 17, 27, 3, 52, 40, 1, 54, 49, 2, 3, 3, 51, 62, 53, 3, 3, 3, 58, 33, 16, 55, 49, 51, 3, 58, 3, 3,
             33, 3, 3, 3, 3, 3, 2, 3, 38, 2, 3, 57, 10],
            [3, 3, 3, 16, 34, 53, 2, 49, 3, 10, 3, 55, 40, 55, 3, 3, 49, 3, 5, 3, 38, 3, 40, 22, 3, 3, 3, 34, 3, 40, 4, 3, 49, 3, 3, 10,
             3, 3, 62, 40, 55, 49, 3, 40, 4, 2, 3, 3, 3, 40, 58, 55, 51, 3, 62, 40, 4, 62, 50, 62, 50, 35, 3, 3, 3, 3, 53, 2, 38, 3, 33,
             40, 13, 51, 52, 37, 3, 50, 34, 3]],
    'rope': [[64, 59, 64, 50, 1, 41, 41, 41, 41, 41, 41, 41, 41, 41, 41, 41, 20, 53, 7, 37, 2, 50, 63, 13, 10, 24, 11, 2, 50, 41, 27, 20,
              28, 2, 49, 35, 55, 12, 62, 28, 39, 57, 35, 17, 25, 0, 15, 30, 28, 47, 33, 17, 1, 36, 10, 49, 43, 15, 10, 18, 2, 45, 63, 61,
              47, 52, 32, 63, 51, 47, 3, 40, 34, 47, 13, 15, 30, 52, 30, 46],
             [28, 60, 60, 51, 34, 24, 8, 46, 45, 46, 60, 16, 45, 46, 13, 60, 11, 46, 14, 9, 42, 47, 25, 49, 3, 9, 18, 13, 46, 64, 7, 4, 43,
              63, 36, 62, 28, 30, 5, 43, 40, 64, 64, 27, 62, 58, 37, 30, 57, 3, 16, 46, 25, 25, 58, 53, 18, 25, 2, 1, 2, 49, 40, 0, 63, 18,
              14, 64, 21, 20, 25, 59, 63, 28, 21, 14, 31, 3, 9, 4]]}

def old_greedy_model(kind):
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=65, block_size=32, n_layer=2, n_head=4, n_embd=64, tie_weights=False, **({} if kind == 'gpt' else LLAMA)))
    with torch.no_grad():
        for p in m.parameters(): p.mul_(4)                # sharper logits: greedy tokens that vary (a plain random init repeats one)
    return m

@pytest.mark.parametrize('kind', ['gpt', 'rope'])
def test_greedy_tokens_same_as_before(kind):
    m, x = old_greedy_model(kind), torch.tensor([[1, 2, 3], [40, 50, 60]])
    new = generate_ids(m, x, 80, 0)
    assert new[:, 3:].tolist() == OLD_GREEDY[kind]
    assert torch.equal(new[:, :32], generate_ids(m, x, 80, 0, use_cache=False)[:, :32])   # within one block: as recomputation

def test_compiled_static_decoding_same_tokens():
    "compile=True (the static cache, one-token steps through torch.compile; CUDA graphs on a GPU) gives the eager tokens."
    m, x = old_greedy_model('rope'), torch.tensor([[1, 2, 3], [40, 50, 60]])
    assert generate_ids(m, x, 80, 0, compile=True)[:, 3:].tolist() == OLD_GREEDY['rope']
    g = lambda: torch.Generator().manual_seed(1)
    assert torch.equal(generate_ids(m, x, 40, 0.9, top_p=0.9, generator=g(), compile=True), generate_ids(m, x, 40, 0.9, top_p=0.9, generator=g()))
    c = G.static_cache(m, 2)
    assert c.static and c.k[0].shape == (2, 4, 32, 16) and G.static_cache(m, 2) is c and not c.pos.any()   # reused, emptied
    with pytest.raises(ConfigError, match='use_cache=True'): generate_ids(m, x, 4, 0, use_cache=False, compile=True)
    with pytest.raises(ConfigError, match='with a GPT'): generate_ids(RNNLM(RNNConfig(n_layer=1, n_embd=32)), x, 4, 0, compile=True)

def test_eos_stops_checked_in_batches():
    m, x = old_greedy_model('gpt'), torch.tensor([[1, 2, 3], [40, 50, 60]])
    eos = 49                                           # row 0 first makes it at step 18, row 1 at step 8: stop after 18
    out = generate_ids(m, x, 80, 0, eos=eos)
    assert out.shape == (2, 3 + 18) and out[0, -1] == eos and (out[1, 3 + 8:] == eos).all()
    steps = list(G.token_stream(m, x, 80, 0, eos=eos, stop_every=16))
    assert len(steps) == 32 and torch.equal(torch.cat(steps, 1)[:, :18], out[:, 3:])   # checked at 16 and 32: the rest repeats eos
    assert generate_ids(m, x, 80, 0, eos=[eos, 77]).shape == out.shape
