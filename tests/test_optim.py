"""llmtrain.optim: from-scratch optimizers against torch.optim, schedules, the optimizer factory, the LR finder."""
import copy, math
import pytest, torch
from hypothesis import given, settings, strategies as st
from llmtrain.core import ConfigError, TrainConfig
from llmtrain.data import load_corpus, encode_corpus, RandomWindows
from llmtrain.models import GPT, GPTConfig
from llmtrain.optim import param_groups
from llmtrain.training import lr_at
from llmtrain.optim import (GD, Momentum, Adam, AdamW, Muon, MuonAdamW, newton_schulz, SCHEDULES, schedule_lr, OPTIMIZERS, create_optimizer, lr_find,
                            plot_lr_find)

@pytest.fixture(scope='module')
def data():
    return encode_corpus(load_corpus('pydoc'))

@pytest.fixture(scope='module')
def problem(data):
    "A one-layer char GPT in float64 and 100 fixed batches of real text."
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=data.tokenizer.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=32)).double()
    b = RandomWindows(data.train, block_size=16, batch_size=8, seed=0)
    return model, [next(b) for _ in range(100)]

def max_gap(problem, make_a, make_b, steps=100, weight_decay=0.1):
    "Largest parameter difference over `steps` steps of two copies of the model stepped by two optimizers."
    base, batches = problem
    a, b = copy.deepcopy(base), copy.deepcopy(base)
    oa, ob = make_a(param_groups(a, weight_decay)), make_b(param_groups(b, weight_decay))
    worst = 0.0
    for x, y in batches[:steps]:
        for m, o in ((a, oa), (b, ob)):
            m(x, y)[1].backward(); o.step(); o.zero_grad(set_to_none=True)
        worst = max(worst, max((pa - pb).abs().max().item() for pa, pb in zip(a.parameters(), b.parameters())))
    return worst

PAIRS = {
    'gd': (lambda g: GD(g, lr=0.1), lambda g: torch.optim.SGD(g, lr=0.1)),
    'momentum': (lambda g: Momentum(g, lr=0.05), lambda g: torch.optim.SGD(g, lr=0.05, momentum=0.9)),
    'nesterov': (lambda g: Momentum(g, lr=0.05, nesterov=True), lambda g: torch.optim.SGD(g, lr=0.05, momentum=0.9, nesterov=True)),
    'adam': (lambda g: Adam(g, lr=3e-3, betas=(0.8, 0.95)), lambda g: torch.optim.Adam(g, lr=3e-3, betas=(0.8, 0.95))),
    'adamw': (lambda g: AdamW(g, lr=3e-3), lambda g: torch.optim.AdamW(g, lr=3e-3)),
}

@pytest.mark.parametrize('name', list(PAIRS))
def test_trajectory_matches_torch_over_100_steps(problem, name):
    assert max_gap(problem, *PAIRS[name]) < 1e-6

@pytest.mark.parametrize('ours, theirs', [('adamw-scratch', 'adamw'), ('adam-scratch', 'adam'), ('momentum', 'sgd')])
def test_factory_scratch_and_torch_optimizers_agree(problem, ours, theirs):
    make = lambda name: lambda g: create_optimizer(name, g, lr=2e-3, betas=(0.9, 0.99), momentum=0.8)
    assert max_gap(problem, make(ours), make(theirs), steps=30) < 1e-6

def test_the_comparison_can_fail(problem):
    assert max_gap(problem, lambda g: Adam(g, lr=3e-3), PAIRS['adamw'][1], steps=3) > 1e-4       # coupled vs decoupled decay
    assert max_gap(problem, lambda g: Momentum(g, lr=0.05), PAIRS['nesterov'][1], steps=3) > 1e-6

def test_gradient_descent_on_a_convex_bowl_converges_below_2_over_L_and_diverges_above():
    def run(lr):
        p = torch.tensor([-4.0, 2.5], dtype=torch.float64, requires_grad=True); o = GD([p], lr=lr)
        for _ in range(200):
            o.zero_grad(); (0.5 * p[0] ** 2 + 5 * p[1] ** 2).backward(); o.step()
        return p.detach().norm().item()
    assert run(0.19) < 1e-6 and run(0.21) > 1e3

def test_optimizer_state_survives_a_state_dict_round_trip(problem):
    base, batches = problem
    a, b = copy.deepcopy(base), copy.deepcopy(base)
    oa = AdamW(a.parameters(), lr=1e-3); ob = AdamW(b.parameters(), lr=1e-3)
    for m, o in ((a, oa), (b, ob)):
        m(*batches[0])[1].backward(); o.step(); o.zero_grad()
    ob2 = AdamW(b.parameters(), lr=1e-3); ob2.load_state_dict(copy.deepcopy(ob.state_dict()))
    for m, o in ((a, oa), (b, ob2)):
        m(*batches[1])[1].backward(); o.step(); o.zero_grad()
    assert all(torch.equal(pa, pb) for pa, pb in zip(a.parameters(), b.parameters()))

def test_bad_hyperparameters_are_refused():
    p = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(ConfigError, match='lr=-1'): GD(p, lr=-1)
    with pytest.raises(ConfigError, match='momentum=1.0'): Momentum(p, momentum=1.0)
    with pytest.raises(ConfigError, match='betas'): Adam(p, betas=(0.9, 1.0))

# schedules

@settings(max_examples=300, deadline=None)
@given(lr=st.floats(1e-6, 1.0), frac=st.floats(0.0, 1.0), warmup=st.integers(0, 300), total=st.integers(1, 3000),
       it=st.integers(0, 4000), name=st.sampled_from(['cosine', 'constant']))
def test_cosine_and_constant_equal_the_trainers_lr_at(lr, frac, warmup, total, it, name):
    cfg = TrainConfig(lr=lr, min_lr=lr * frac, warmup_iters=warmup, max_iters=total, schedule=name)
    assert schedule_lr(name, it, lr, lr * frac, warmup, total) == lr_at(it, cfg)

def _torch_onecycle(lr, min_lr, w, T):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    s = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=T, pct_start=w / T, div_factor=25,
                                            final_div_factor=lr / 25 / min_lr, cycle_momentum=False)
    out = []
    for _ in range(T): out.append(opt.param_groups[0]['lr']); opt.step(); s.step()
    return out

@pytest.mark.parametrize('lr, min_lr, w, T', [(1e-3, 1e-5, 30, 100), (0.1, 1e-4, 250, 1000), (5e-4, 5e-6, 0, 40),
                                               (1e-2, 1e-6, 2, 3), (3e-4, 3e-6, 100, 2000)])
def test_onecycle_equals_torch_onecyclelr(lr, min_lr, w, T):
    ours = [schedule_lr('onecycle', it, lr, min_lr, w, T) for it in range(T)]
    assert max(abs(a - b) for a, b in zip(ours, _torch_onecycle(lr, min_lr, w, T))) < 1e-12 * lr
    assert schedule_lr('onecycle', T + 5, lr, min_lr, w, T) == min_lr

def test_schedule_shapes():
    lr, mn, w, T = 1e-3, 1e-5, 100, 1100
    s = {n: [schedule_lr(n, it, lr, mn, w, T) for it in range(T + 10)] for n in SCHEDULES}
    for n in ('constant', 'step', 'cosine', 'wsd'):                      # the same linear warmup
        assert s[n][:w] == [lr * (i + 1) / (w + 1) for i in range(w)] and s[n][w] == pytest.approx(lr)
    assert set(s['constant'][w:]) == {lr}
    assert s['step'][w + 499] == lr and s['step'][w + 500] == pytest.approx(lr / 10) and s['step'][w + 750] == pytest.approx(lr / 100)
    assert s['wsd'][w + 799] == lr and s['wsd'][w + 900] == pytest.approx((lr + mn) / 2) and s['wsd'][T - 1] > mn
    assert all(s[n][T] == mn for n in SCHEDULES if n != 'constant')
    assert all(a >= b for a, b in zip(s['cosine'][w:], s['cosine'][w + 1:]))     # non-increasing after warmup
    assert s['onecycle'][0] == pytest.approx(lr / 25) and s['onecycle'][w - 1] == lr
    assert schedule_lr('step', T - 1, lr, lr / 10, w, T) == lr / 10               # floored at min_lr

def test_unknown_schedule_lists_the_valid_ones():
    with pytest.raises(ConfigError) as e: schedule_lr('linear', 0, 1e-3, 0.0, 10, 100)
    assert all(n in str(e.value) for n in SCHEDULES)
    with pytest.raises(ConfigError, match='warmup_iters=-1'): schedule_lr('cosine', 0, 1e-3, 0.0, -1, 100)
    assert SCHEDULES == ('constant', 'step', 'cosine', 'wsd', 'onecycle')

# the optimizer factory

EXPECTED = {'adamw': torch.optim.AdamW, 'adam': torch.optim.Adam, 'sgd': torch.optim.SGD, 'gd': GD, 'momentum': Momentum,
            'nesterov': Momentum, 'adam-scratch': Adam, 'adamw-scratch': AdamW, 'muon': MuonAdamW}

@pytest.mark.parametrize('name', OPTIMIZERS)
def test_create_optimizer(name):
    m = GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=16))
    groups = param_groups(m, 0.1, muon=name == 'muon')
    o = create_optimizer(name, groups, lr=2e-3, betas=(0.8, 0.95), momentum=0.5, eps=1e-6)
    assert type(o) is EXPECTED[name]
    decays = [0.1, 0.1, 0.0] if name == 'muon' else [0.1, 0.0]
    assert [g['weight_decay'] for g in o.param_groups] == decays and all(g['lr'] == 2e-3 for g in o.param_groups)
    assert set(groups[-1]) == {'params', 'weight_decay'} and 'lr' not in groups[0]   # the caller's dicts are not modified
    if 'betas' in o.defaults: assert tuple(o.defaults['betas']) == (0.8, 0.95) and o.defaults['eps'] == 1e-6
    if 'momentum' in o.defaults: assert o.defaults['momentum'] == 0.5
    if name in ('adamw', 'adam'): assert o.defaults['fused']
    assert o.param_groups[0].get('nesterov', False) == (name in ('nesterov', 'muon'))     # Muon's momentum is Nesterov's
    m(torch.zeros(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.long))[1].backward(); o.step()   # it steps

def test_create_optimizer_defaults_and_errors():
    m = GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=16))
    assert create_optimizer('adamw', [dict(params=list(m.parameters()))], 1e-3).param_groups[0]['weight_decay'] == 0.0
    assert len(create_optimizer('gd', m.parameters(), 1e-3).param_groups) == 1
    with pytest.raises(ConfigError) as e: create_optimizer('lion', param_groups(m, 0.1), 1e-3)
    assert all(n in str(e.value) for n in OPTIMIZERS)
    with pytest.raises(ConfigError, match='lr=0'): create_optimizer('adamw', param_groups(m, 0.1), 0)

def test_param_groups_decay_only_linear_weights():
    m = GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=2, n_head=2, n_embd=16, bias=True, tie_weights=False))
    decay, no_decay = param_groups(m, 0.1)
    names = {id(p): n for n, p in m.named_parameters()}
    assert sorted(names[id(p)] for p in decay['params']) == sorted(
        f'{n}.weight' for n, mod in m.named_modules() if isinstance(mod, torch.nn.Linear))
    assert all(names[id(p)].endswith('bias') or '.ln' in names[id(p)] or '.wte' in names[id(p)] or '.wpe' in names[id(p)]
               for p in no_decay['params'])
    assert len(decay['params']) + len(no_decay['params']) == len(list(m.parameters()))

# the LR finder

def test_lr_find_sweeps_restores_and_suggests(data):
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=data.tokenizer.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=32))
    m.eval()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    r = lr_find(m, RandomWindows(data.train, 16, 8, seed=1), num_iters=60, smooth=0.8)
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items()) and not m.training
    lrs = r['lrs']
    assert lrs[0] == 1e-7 and all(b > a for a, b in zip(lrs, lrs[1:])) and len(lrs) == len(r['losses']) == len(r['raw_losses'])
    ratio = (10 / 1e-7) ** (1 / 59)
    assert all(b / a == pytest.approx(ratio) for a, b in zip(lrs, lrs[1:]))
    assert len(lrs) < 60 and (r['losses'][-1] > 4 * min(r['losses'][:-1]) or not math.isfinite(r['losses'][-1]))   # stopped
    assert r['suggestion'] in lrs and lrs[0] < r['suggestion'] < lrs[-1]
    best = min(range(len(lrs)), key=lambda i: r['losses'][i])
    assert r['suggestion'] <= lrs[best] and r['min_div10'] == pytest.approx(lrs[best] / 10)
    import matplotlib; matplotlib.use('Agg')
    assert plot_lr_find(r) is not None

def test_lr_find_accepts_a_list_of_batches_and_checks_arguments(data):
    m = GPT(GPTConfig(vocab_size=data.tokenizer.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=32))
    b = RandomWindows(data.train, 16, 4, seed=1); batches = [next(b) for _ in range(3)]
    r = lr_find(m, batches, start_lr=1e-5, end_lr=1e-3, num_iters=10, optimizer='sgd')
    assert len(r['lrs']) == 10 and r['lrs'][-1] == pytest.approx(1e-3)
    with pytest.raises(ConfigError, match='start_lr'): lr_find(m, batches, start_lr=1.0, end_lr=0.1)
    with pytest.raises(ConfigError, match='num_iters'): lr_find(m, batches, num_iters=1)
    with pytest.raises(ConfigError, match='smooth'): lr_find(m, batches, smooth=1.0)

# Muon

def test_muon_matches_torch_optim_muon_over_many_steps():
    "Our Muon and torch.optim.Muon on the same 2-D hidden matrices of a GPT, fed the same gradients for 60 steps: bitwise equal."
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=2, n_head=2, n_embd=16, tie_weights=False))
    hidden = param_groups(m, 0.1, muon=True)[0]['params']
    a, b = [p.detach().clone().requires_grad_() for p in hidden], [p.detach().clone().requires_grad_() for p in hidden]
    for kw in (dict(), dict(adjust_lr_fn='match_rms_adamw'), dict(nesterov=False, momentum=0.9)):
        oa, ob = Muon(a, lr=0.02, weight_decay=0.1, batched=False, **kw), torch.optim.Muon(b, lr=0.02, weight_decay=0.1, **kw)
        for _ in range(60):
            for pa, pb in zip(a, b): pa.grad = pb.grad = torch.randn_like(pa) + pa.detach()   # gradients that depend on the weights
            oa.step(); ob.step()
        assert all(torch.equal(pa, pb) for pa, pb in zip(a, b)), kw
    c = [p.detach().clone().requires_grad_() for p in b]                   # stacked by shape: bfloat16 rounding apart
    oc, ob = Muon(c, lr=0.02, weight_decay=0.1), torch.optim.Muon(b, lr=0.02, weight_decay=0.1)
    for _ in range(60):
        for pc, pb in zip(c, b): pc.grad = pb.grad = torch.randn_like(pc) + pc.detach()
        oc.step(); ob.step()
    assert max((pc - pb).abs().max().item() for pc, pb in zip(c, b)) < 1e-2

def test_newton_schulz_orthogonalises():
    torch.manual_seed(0)
    G = torch.randn(48, 4) @ torch.randn(4, 80) + 0.3 * torch.randn(48, 80)
    s = torch.linalg.svdvals(newton_schulz(G).float())
    assert 0.5 < s.min() and s.max() < 1.3
    with pytest.raises(ValueError, match='matrix'): newton_schulz(torch.randn(2, 2, 3, 4))
    st = torch.randn(4, 48, 80)
    assert (newton_schulz(st).float() - torch.stack([newton_schulz(g) for g in st]).float()).abs().max() < 0.02

def test_muon_groups_and_errors():
    m = GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=2, n_head=2, n_embd=16, tie_weights=False))
    hidden, head, rest = param_groups(m, 0.1, muon=True)
    names = {id(p): n for n, p in m.named_parameters()}
    assert hidden['muon'] and all(p.dim() == 2 and names[id(p)].startswith('transformer.h.') for p in hidden['params'])
    assert [names[id(p)] for p in head['params']] == ['lm_head.weight']
    with pytest.raises(ConfigError, match='2-D'): Muon([torch.zeros(3, requires_grad=True)])
    with pytest.raises(ConfigError, match='muon=True'): create_optimizer('muon', param_groups(m, 0.1), 1e-3)
    o = create_optimizer('muon', [hidden, head, rest], 1e-3, muon_lr=5e-3)
    assert o.muon.param_groups[0]['lr_ratio'] == 5.0
    with pytest.raises(ValueError, match='param groups'): o.load_state_dict({'state': {}, 'param_groups': []})
