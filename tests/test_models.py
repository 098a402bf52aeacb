"""Chapter 2's models: the GPT's block options (RoPE, RMSNorm, SwiGLU) against reference computations, the recurrent
language models, the CNNs, costs (parameters, FLOPs, activation memory), generation with either cache, and errors."""
import itertools, math, subprocess, sys
from types import SimpleNamespace
import pytest, torch
import torch.nn as nn
import torch.nn.functional as F
from llmtrain.core import TrainConfig, ConfigError, LLMTrainError, set_seed
from llmtrain.generation import generate_ids
from llmtrain.models import (GPT, GPTConfig, GPT_CHOICES, PRESETS, RNN_CELLS, RNNConfig, RNNLM, RNNState, KVCache, SeedCNN,
                             StrongCNN, CausalSelfAttention, SwiGLU, MLP, apply_rope, rope_angles, make_norm, swiglu_hidden,
                             create_model, num_params, flops_per_token, model_flops, counted_flops,
                             activation_memory, model_summary, param_counts, attention_maps)

COMBOS = [dict(zip(GPT_CHOICES, v)) for v in itertools.product(*GPT_CHOICES.values())]
LMS = [('gpt', o) for o in COMBOS] + [(c, {}) for c in RNN_CELLS]
LM_IDS = ['gpt-' + '-'.join(o.values()) if k == 'gpt' else k for k, o in LMS]
V = 50

def build(kind, opts=None, **kw):
    "A small language model of either kind."
    if kind == 'gpt': return GPT(GPTConfig(**{**dict(vocab_size=V, block_size=32, n_layer=2, n_head=2, n_embd=32), **(opts or {}), **kw}))
    return RNNLM(RNNConfig(**{**dict(vocab_size=V, block_size=32, n_layer=2, n_embd=32, cell=kind), **kw}))

# ---------------------------------------------------------------- causality, attention, the block options
@pytest.mark.parametrize('kind, opts', LMS, ids=LM_IDS)
def test_a_future_token_never_changes_earlier_logits(kind, opts):
    torch.manual_seed(0)
    m = build(kind, opts).eval()
    a = torch.randint(0, V, (2, 24))
    with torch.no_grad(): la, _ = m(a, a)
    for t in (0, 9, 23):
        b = a.clone(); b[:, t] = (b[:, t] + 1) % V
        with torch.no_grad(): lb, _ = m(b, b)
        assert torch.equal(la[:, :t], lb[:, :t])                     # bitwise: nothing leaks from the future
        assert not torch.allclose(la[:, t:], lb[:, t:])              # and the change is seen from t on

@pytest.mark.parametrize('pos_emb', ['learned', 'rope'])
def test_sdpa_equals_attention_written_by_hand(pos_emb):
    torch.manual_seed(0)
    c = GPTConfig(n_embd=32, n_head=4, block_size=16, pos_emb=pos_emb)
    att = CausalSelfAttention(c).eval().double()
    x = torch.randn(3, 11, 32, dtype=torch.float64)
    q, k, v = (t.view(3, 11, 4, 8).transpose(1, 2) for t in att.c_attn(x).split(32, dim=2))
    rope = None
    if pos_emb == 'rope':
        rope = rope_angles(8, 11, dtype=torch.float64)
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
    w = (q @ k.transpose(-2, -1)) / math.sqrt(8)
    w = w.masked_fill(torch.ones(11, 11, dtype=torch.bool).triu(1), float('-inf')).softmax(-1)
    ref = att.c_proj((w @ v).transpose(1, 2).reshape(3, 11, 32))
    torch.testing.assert_close(att(x, rope=rope), ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(att.weights(x, rope), w.float(), rtol=0, atol=1e-6)

def test_rope_equals_the_complex_number_formulation():
    torch.manual_seed(1)
    d, T, base = 16, 40, 10000.0
    x = torch.randn(2, 3, T, d, dtype=torch.float64)
    theta = torch.tensor([base ** (-2 * j / d) for j in range(d // 2)], dtype=torch.float64)
    z = torch.complex(x[..., :d // 2], x[..., d // 2:])                       # pair j = (x_j, x_{j+d/2})
    z = z * torch.exp(1j * torch.arange(T, dtype=torch.float64)[:, None] * theta)   # times e^{i m θ_j}
    torch.testing.assert_close(apply_rope(x, *rope_angles(d, T, base, dtype=torch.float64)),
                               torch.cat([z.real, z.imag], -1), rtol=0, atol=1e-12)

def test_rope_scores_depend_only_on_the_distance():
    torch.manual_seed(2)
    q, k = torch.randn(1, 8, dtype=torch.float64), torch.randn(1, 8, dtype=torch.float64)
    cos, sin = rope_angles(8, 100, dtype=torch.float64)
    s = lambda m, n: (apply_rope(q, cos[[m]], sin[[m]]) @ apply_rope(k, cos[[n]], sin[[n]]).T).item()
    assert s(10, 4) == pytest.approx(s(90, 84), abs=1e-10) and s(10, 4) != pytest.approx(s(10, 5), abs=1e-3)

def test_rope_keeps_a_low_precision_dtype_and_adds_no_parameters():
    cos, sin = rope_angles(8, 5)
    x = torch.randn(2, 5, 8).bfloat16()
    assert apply_rope(x, cos, sin).dtype == torch.bfloat16
    a, b = build('gpt', dict(pos_emb='learned')), build('gpt', dict(pos_emb='rope'))
    assert num_params(a, non_embedding=False) - num_params(b, non_embedding=False) == 32 * 32   # the position table
    assert 'rope_cos' not in b.state_dict()                  # a function of the config, not saved with the weights

def test_rmsnorm_matches_its_formula_and_is_torchs():
    assert hasattr(nn, 'RMSNorm')
    norm = make_norm(GPTConfig(n_embd=24, n_head=2, norm='rmsnorm')).double()
    assert isinstance(norm, nn.RMSNorm)
    with torch.no_grad(): norm.weight.uniform_(0.5, 2)
    x = torch.randn(4, 7, 24, dtype=torch.float64) * 5 + 2
    torch.testing.assert_close(norm(x), x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * norm.weight, rtol=0, atol=1e-12)
    ln = make_norm(GPTConfig(n_embd=24, n_head=2, bias=True))
    assert isinstance(ln, nn.LayerNorm) and ln.bias is not None

def test_swiglu_matches_its_formula():
    torch.manual_seed(3)
    m = SwiGLU(GPTConfig(n_embd=48, n_head=2, mlp='swiglu')).double()
    h = m.hidden
    x = torch.randn(2, 9, 48, dtype=torch.float64)
    W1, W3, W2 = m.c_fc.weight[:h], m.c_fc.weight[h:], m.c_proj.weight
    ref = ((x @ W1.T) * torch.sigmoid(x @ W1.T) * (x @ W3.T)) @ W2.T
    torch.testing.assert_close(m(x), ref, rtol=0, atol=1e-12)

@pytest.mark.parametrize('C, h', [(64, 192), (128, 384), (384, 1024), (768, 2048), (4096, 10944)])
def test_swiglu_width_keeps_the_mlp_size(C, h):
    assert swiglu_hidden(C) == h and h % 64 == 0
    g, s = 2 * 4 * C * C, 3 * C * h
    assert 1.0 <= s / g <= 1.125

def test_block_parts_follow_the_config():
    m = build('gpt', dict(pos_emb='rope', norm='rmsnorm', mlp='swiglu'))
    b = m.transformer.h[0]
    assert isinstance(b.ln_1, nn.RMSNorm) and isinstance(b.mlp, SwiGLU) and 'wpe' not in m.transformer
    m = build('gpt')
    assert isinstance(m.transformer.h[0].ln_1, nn.LayerNorm) and isinstance(m.transformer.h[0].mlp, MLP)

def test_default_gpt_state_dict_is_unchanged():
    "Checkpoints written before the block options existed still load."
    keys = set(build('gpt', n_layer=1).state_dict())
    assert keys == {'transformer.wte.weight', 'transformer.wpe.weight', 'transformer.h.0.ln_1.weight',
                    'transformer.h.0.attn.c_attn.weight', 'transformer.h.0.attn.c_proj.weight', 'transformer.h.0.ln_2.weight',
                    'transformer.h.0.mlp.c_fc.weight', 'transformer.h.0.mlp.c_proj.weight', 'transformer.ln_f.weight',
                    'lm_head.weight'}

# ---------------------------------------------------------------- caches and generation
@pytest.mark.parametrize('opts', COMBOS, ids=LM_IDS[:len(COMBOS)])
def test_kv_cache_logits_equal_recomputation(opts):
    torch.manual_seed(4)
    m = build('gpt', opts).eval()
    seq = torch.randint(0, V, (2, 24))
    with torch.no_grad():
        full, _ = m(seq, seq)
        cache = KVCache(2, 32)
        steps = [m(seq[:, :7], cache=cache)[0][:, -1]] + [m(seq[:, t:t + 1], cache=cache)[0][:, -1] for t in range(7, 24)]
    torch.testing.assert_close(torch.stack(steps, 1), full[:, 6:], rtol=0, atol=1e-5)

@pytest.mark.parametrize('kind, opts', LMS, ids=LM_IDS)
def test_greedy_generation_is_the_same_with_and_without_the_cache(kind, opts):
    torch.manual_seed(5)
    m = build(kind, opts).eval()
    prompt = torch.randint(0, V, (3, 4))
    a, b = (generate_ids(m, prompt, 28, temperature=0, use_cache=u) for u in (True, False))
    assert torch.equal(a, b) and a.shape == (3, 32)
    long = generate_ids(m, prompt, 60, temperature=0.8, top_k=5, generator=torch.Generator().manual_seed(0))
    assert long.shape == (3, 64) and long.max() < V            # past block_size: the window slides (GPT) or the state runs on

def test_recurrent_state_is_the_kv_cache_of_an_rnn():
    torch.manual_seed(6)
    m = build('lstm').eval()
    seq = torch.randint(0, V, (2, 50))                       # longer than block_size: a recurrence has no limit
    with torch.no_grad():
        full, _ = m(seq, seq)
        st = RNNState()
        parts = [m(seq[:, i:i + 10], seq[:, i:i + 10], cache=st)[0] for i in range(0, 50, 10)]
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=0, atol=1e-5)
    assert st.pos == 50

def test_lstm_starts_with_its_forget_gate_open():
    m = build('lstm', n_layer=2)
    for layer in range(2):
        b = getattr(m.rnn, f'bias_ih_l{layer}') + getattr(m.rnn, f'bias_hh_l{layer}')   # gates (input, forget, cell, output)
        assert torch.equal(b[32:64], torch.ones(32))
    assert m.wte.weight is m.lm_head.weight and 0.9 < m.wte.weight.std().item() < 1.1   # tied, normal(0, 1)

# ---------------------------------------------------------------- sizes and costs
@pytest.mark.parametrize('name, expected', [('gpt2-124m', 124_439_808), ('llama2-7b', 6_738_415_616),
                                            ('char-cpu', 65 * 128 + 64 * 128 + 4 * (12 * 128 ** 2 + 2 * 128) + 128),
                                            ('llama-char-cpu', 65 * 128 + 4 * (4 * 128 ** 2 + 3 * 128 * 384 + 2 * 128) + 128)])
def test_preset_parameter_counts(name, expected):
    with torch.device('meta'): m = GPT(GPTConfig(**PRESETS[name]))
    assert num_params(m, non_embedding=False) == expected

@pytest.mark.parametrize('kind, opts', LMS, ids=LM_IDS)
def test_flop_formula_is_within_5_percent_of_the_counter(kind, opts):
    m = build(kind, opts, block_size=48)
    x = torch.randint(0, V, (3, 48))
    got, want = counted_flops(m, x, x), model_flops(m, 48)
    assert abs(want['forward'] * x.numel() / got['forward'] - 1) < 0.05
    assert abs(want['train'] * x.numel() / (got['forward'] + got['backward']) - 1) < 0.05
    if kind == 'gpt':
        c = m.config
        assert flops_per_token(m) == want['train'] == 6 * num_params(m) + 12 * c.n_layer * c.n_embd * c.block_size

def test_activation_memory_matches_the_hand_count_and_scales_with_tokens():
    m = GPT(GPTConfig(vocab_size=65, **PRESETS['char-cpu']))
    x = torch.randint(0, 65, (4, 64))
    C, L, H = 128, 4, 4
    hand = L * (16 * C * 4 + 16 + 4 * H) + 2 * C * 4 + 8 + 65 * 4 + 16
    per_token = activation_memory(m, x, x) / x.numel()
    assert abs(per_token / hand - 1) < 0.01, (per_token, hand)
    x2 = torch.randint(0, 65, (8, 64))
    assert abs(activation_memory(m, x2, x2) / activation_memory(m, x, x) - 2) < 0.01

@pytest.mark.parametrize('model', [build('gpt'), build('gpt', dict(pos_emb='rope')), build('gru', tie_weights=False), SeedCNN(), StrongCNN()],
                         ids=['gpt', 'gpt-rope', 'gru-untied', 'seed-cnn', 'strong-cnn'])
def test_model_summary_counts_every_parameter_once(model):
    x = torch.randn(2, 1, 28, 28) if isinstance(model, (SeedCNN, StrongCNN)) else torch.randint(0, V, (2, 16))
    s = model_summary(model, x)
    assert s.params.sum() == sum(p.numel() for p in model.parameters())
    assert s.output_shape.notna().any()
    counts = param_counts(model)
    assert counts['total'] == s.params.sum() == sum(v for k, v in counts.items() if k != 'total')

def test_param_counts_by_component():
    c = param_counts(build('gpt'))
    assert c['attention'] == 2 * 4 * 32 * 32 and c['mlp'] == 2 * 8 * 32 * 32 and c['position embedding'] == 32 * 32
    assert c['head'] == 0 and c['token embedding'] == V * 32          # tied: counted once, with the embedding
    r = param_counts(build('lstm'))
    assert r['recurrent'] == sum(p.numel() for p in nn.LSTM(32, 32, 2).parameters())

# ---------------------------------------------------------------- precision, determinism, errors
@pytest.mark.parametrize('kind, opts', LMS, ids=LM_IDS)
def test_shapes_and_dtypes_under_bf16_autocast(kind, opts):
    m = build(kind, opts)
    x = torch.randint(0, V, (2, 16))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        logits, loss = m(x, x)
        last, none = m(x)
    assert logits.shape == (2, 16, V) and logits.dtype == torch.bfloat16
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert last.shape == (2, 1, V) and none is None
    loss.backward()
    assert all(p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)

@pytest.mark.parametrize('kind, opts', LMS, ids=LM_IDS)
def test_fixed_seed_gives_the_same_model_and_output(kind, opts):
    x = torch.randint(0, V, (2, 16), generator=torch.Generator().manual_seed(0))
    outs = []
    for seed in (7, 7, 8):
        set_seed(seed); outs.append(build(kind, opts, dropout=0.1)(x, x))      # dropout on: the RNG matters too
    assert torch.equal(outs[0][0], outs[1][0]) and outs[0][1].item() == outs[1][1].item()
    assert not torch.equal(outs[0][0], outs[2][0])

@pytest.mark.parametrize('make, field', [
    (lambda: GPTConfig(n_embd=100, n_head=3), 'n_embd=100'),
    (lambda: GPTConfig(pos_emb='alibi'), 'pos_emb'), (lambda: GPTConfig(norm='batchnorm'), 'norm'),
    (lambda: GPTConfig(mlp='relu'), 'mlp'), (lambda: GPTConfig(n_embd=12, n_head=4, pos_emb='rope'), 'n_embd/n_head'),
    (lambda: GPTConfig(n_layer=0), 'n_layer'), (lambda: GPTConfig(dropout=1.0), 'dropout'),
    (lambda: RNNConfig(cell='transformer'), 'cell'), (lambda: RNNConfig(n_embd=0), 'n_embd'),
    (lambda: build('gpt')(torch.zeros(1, 33, dtype=torch.long)), 'block_size=32'),
    (lambda: create_model(TrainConfig(model='lstm', pos_emb='rope'), V), 'pos_emb'),
    (lambda: create_model(TrainConfig(model='gru', mlp='swiglu'), V), 'mlp'),
    (lambda: create_model(SimpleNamespace(model='mamba'), V), 'model='),
    (lambda: StrongCNN(image_size=30), 'image_size'),
])
def test_bad_config_raises_a_config_error_naming_the_field(make, field):
    with pytest.raises(ConfigError) as e: make()
    assert field in str(e.value) and isinstance(e.value, LLMTrainError)

def test_gpt_config_n_embd_error_names_both_fields():
    with pytest.raises(ConfigError, match='n_embd=100 must be divisible by n_head=3'): GPTConfig(n_embd=100, n_head=3)

# ---------------------------------------------------------------- through the library's pipeline
@pytest.fixture(scope='module')
def text():
    from llmtrain.data import load_corpus, encode_corpus
    return encode_corpus(load_corpus('pydoc')[:100_000])

def small_cfg(**kw):
    base = dict(n_layer=2, n_head=2, n_embd=32, block_size=32, batch_size=8, max_iters=30, lr=3e-3, warmup_iters=2,
                log_interval=5, eval_interval=30, eval_iters=1, device='cpu', precision='fp32', progress=False, sample_tokens=0)
    return TrainConfig(**{**base, **kw})

@pytest.mark.parametrize('kind, opts', LMS, ids=LM_IDS)
def test_every_language_model_trains_through_the_trainer(text, kind, opts):
    from llmtrain.data import RandomWindows, eval_windows
    from llmtrain.training import Trainer
    cfg = small_cfg(model=kind, **opts)
    set_seed(0)
    m = create_model(cfg, text.tokenizer.vocab_size)
    assert type(m) is (GPT if kind == 'gpt' else RNNLM)
    assert all(getattr(m.config, k) == v for k, v in opts.items())
    t = Trainer(m, RandomWindows(text.train, 32, 8, seed=0), eval_windows(text.val, 32, 8, 2), cfg).fit()
    losses = [h['train_loss'] for h in t.history if 'train_loss' in h]
    assert losses[-1] < losses[0] - 0.3, losses
    from llmtrain.evaluation import evaluate
    res = evaluate(t.raw_model, eval_windows(text.val, 32, 8, 2), 'lm')
    assert math.isfinite(res['loss']) and res['loss'] < losses[0]

@pytest.mark.parametrize('net', [SeedCNN, lambda: StrongCNN(image_size=8)], ids=['seed-cnn', 'strong-cnn'])
def test_the_cnns_train_through_the_trainer(net):
    from sklearn.datasets import load_digits
    from llmtrain.data import ResidentBatches
    from llmtrain.training import Trainer
    X, Y = load_digits(return_X_y=True)
    X, Y = torch.tensor(X, dtype=torch.float32).view(-1, 1, 8, 8) / 16, torch.tensor(Y)
    if net is SeedCNN: X = F.interpolate(X, size=28)
    set_seed(0)
    cfg = small_cfg(batch_size=64, max_iters=40)
    t = Trainer(net(), ResidentBatches(X, Y, 64, seed=0), [(X[:100], Y[:100])], cfg).fit()
    losses = [h['train_loss'] for h in t.history if 'train_loss' in h]
    assert losses[-1] < losses[0] - 0.5, losses

def test_seed_cnn_is_unchanged():
    assert sum(p.numel() for p in SeedCNN().parameters()) == 34_826

def test_attention_maps_are_the_weights_the_model_applies():
    torch.manual_seed(8)
    m = build('gpt', dict(pos_emb='rope')).eval()
    x = torch.randint(0, V, (2, 12))
    maps = attention_maps(m, x)
    assert len(maps) == 2 and maps[0].shape == (2, 2, 12, 12)
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(2, 2, 12))
    assert (maps[1].triu(1) == 0).all()
    b = m.transformer.h[0]                                    # layer 0's output rebuilt from its map
    h = b.ln_1(m.transformer.wte(x))
    _, _, v = b.attn.heads(h, (m.rope_cos[:12], m.rope_sin[:12]))
    y = b.attn.c_proj((maps[0] @ v).transpose(1, 2).reshape(2, 12, 32))
    torch.testing.assert_close(y, b.attn(h, None, (m.rope_cos[:12], m.rope_sin[:12])), rtol=0, atol=1e-5)

def test_cli_trains_evaluates_and_samples_an_lstm(tmp_path):
    args = ['train', 'model=lstm', 'n_layer=2', 'n_embd=32', 'block_size=32', 'batch_size=4', 'max_iters=40',
            'eval_interval=20', 'eval_iters=2', f'out_dir={tmp_path}', 'name=r', 'progress=false', 'sample_tokens=30',
            'device=cpu', 'precision=fp32']
    run = lambda *a: subprocess.run([sys.executable, '-m', 'llmtrain.cli', *a], capture_output=True, text=True, timeout=300)
    r = run(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    rd = tmp_path/'r'
    for f in ('config.yaml', 'metrics.csv', 'ckpt.pt', 'model.safetensors', 'sample.txt'): assert (rd/f).is_file(), f
    assert len((rd/'sample.txt').read_text()) > 10
    g = run('generate', '--run', str(rd), '--prompt', 'The', '--n', '20', '--device', 'cpu')
    assert g.returncode == 0 and g.stdout.startswith('The'), g.stderr[-2000:]
    e = run('eval', '--run', str(rd), '--batches', '2', '--device', 'cpu')
    assert e.returncode == 0 and 'loss' in e.stdout, e.stderr[-2000:]
    bad = run('train', 'model=lstm', 'pos_emb=rope', f'out_dir={tmp_path}', 'max_iters=1')
    assert bad.returncode == 2 and 'pos_emb' in bad.stderr
