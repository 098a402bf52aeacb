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
