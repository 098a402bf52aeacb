"""llmtrain.losses against torch.nn.functional: values, hand-derived gradients, the chunked cross-entropy."""
import math
import pytest, torch
import torch.nn.functional as F
from llmtrain.core import ConfigError
from llmtrain.losses import (logsumexp, log_softmax, mse_loss, cross_entropy, cross_entropy_hand, CrossEntropyFunction,
                             chunked_cross_entropy)

D = torch.float64
REDUCTIONS = ('mean', 'sum', 'none')

def close(a, b, atol=1e-6):
    torch.testing.assert_close(a, b, rtol=0, atol=atol, equal_nan=True)

INF = float('inf')
LSE_CASES = [torch.randn(5, 9, dtype=D, generator=torch.Generator().manual_seed(0)) * 10,
             torch.tensor([[1e4, -1e4, 0.], [-1e4, -1e4, -1e4], [1e4, 1e4 - 1, 1e4]], dtype=D),
             torch.tensor([[-INF, 0., 1.], [-INF, -INF, -INF], [INF, 0., 1.]], dtype=D)]

@pytest.mark.parametrize('z', LSE_CASES)
@pytest.mark.parametrize('dim', [0, -1])
def test_logsumexp_matches_torch(z, dim):
    close(logsumexp(z, dim), torch.logsumexp(z, dim), atol=1e-12)
    close(logsumexp(z, dim, keepdim=True), torch.logsumexp(z, dim, keepdim=True), atol=1e-12)

def test_log_softmax_is_stable_where_the_naive_formula_is_not():
    z = torch.tensor([1000., 1001., 1002.])
    assert (z.exp() / z.exp().sum()).isnan().all()
    close(log_softmax(z), F.log_softmax(z, -1), atol=1e-5)

@pytest.mark.parametrize('reduction', REDUCTIONS)
def test_mse_matches_torch(reduction):
    g = torch.Generator().manual_seed(1)
    for a, b in [(torch.randn(7, 3, dtype=D, generator=g), torch.randn(7, 3, dtype=D, generator=g)),
                 (torch.tensor([1e4, -1e4, 0.], dtype=D), torch.tensor([-1e4, 1e4, 1e-300], dtype=D))]:
        close(mse_loss(a, b, reduction), F.mse_loss(a, b, reduction=reduction))

def test_mse_gradient_is_two_errors_over_n():
    a = torch.randn(4, 5, dtype=D, requires_grad=True); b = torch.randn(4, 5, dtype=D)
    mse_loss(a, b).backward()
    close(a.grad, 2 * (a - b).detach() / 20, atol=1e-12)

def _ce_cases():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(16, 10, dtype=D, generator=g) * 4
    t = torch.randint(0, 10, (16,), generator=g); t[[1, 9]] = -100
    big = torch.tensor([[1e4, -1e4, 0.], [-1e4, 1e4, 3.], [0., 0., -1e4]], dtype=D)
    return {'random with ignored': (x, t), 'extreme logits': (big, torch.tensor([1, 1, 2])),
            'one-hot probabilities': (big, F.one_hot(torch.tensor([1, 1, 2]), 3).to(D)),
            'soft targets': (x, torch.softmax(torch.randn(16, 10, dtype=D, generator=g), -1)),
            'all ignored': (x, torch.full((16,), -100))}

@pytest.mark.parametrize('case', list(_ce_cases()))
@pytest.mark.parametrize('reduction', REDUCTIONS)
@pytest.mark.parametrize('smoothing', [0.0, 0.1, 1.0])
def test_cross_entropy_matches_torch(case, reduction, smoothing):
    x, t = _ce_cases()[case]
    kw = dict(reduction=reduction, label_smoothing=smoothing)
    close(cross_entropy(x, t, **kw), F.cross_entropy(x, t, **kw))
    close(cross_entropy_hand(x, t, **kw), F.cross_entropy(x, t, **kw))

def test_all_ignored_mean_is_nan_as_in_torch():
    x, t = _ce_cases()['all ignored']
    assert F.cross_entropy(x, t).isnan() and cross_entropy(x, t).isnan() and cross_entropy_hand(x, t).isnan()
    assert cross_entropy(x, t, reduction='sum').item() == 0.0

def test_custom_ignore_index_and_extreme_value_by_hand():
    x = torch.randn(6, 4, dtype=D); t = torch.tensor([0, 3, 3, 1, 2, 3])
    close(cross_entropy(x, t, ignore_index=3), F.cross_entropy(x, t, ignore_index=3))
    big, tb = _ce_cases()['extreme logits']
    close(cross_entropy(big, tb), torch.tensor((2e4 + 0 + 1e4 + math.log(2)) / 3, dtype=D), atol=1e-9)

def test_classes_last_like_a_language_model():
    x, t = torch.randn(2, 5, 11, dtype=D), torch.randint(0, 11, (2, 5))
    close(cross_entropy(x, t), F.cross_entropy(x.flatten(0, 1), t.flatten()), atol=1e-12)
    assert cross_entropy(x, t, reduction='none').shape == (2, 5)

def test_the_seeds_worked_example():
    logits = torch.tensor([[math.log(0.9), math.log(0.1)]], dtype=D)
    loss = cross_entropy(logits, torch.tensor([0])).item()
    assert abs(loss - (-math.log(0.9))) < 1e-12 and abs(loss - 0.1054) < 1e-4
    assert abs(-0.9 * math.log(0.9) - 0.0948) < 1e-4 and abs(loss - (-0.9 * math.log(0.9))) > 0.01

@pytest.mark.parametrize('reduction', REDUCTIONS)
@pytest.mark.parametrize('smoothing', [0.0, 0.2])
@pytest.mark.parametrize('soft', [False, True])
def test_hand_gradient_passes_gradcheck_and_equals_autograd(reduction, smoothing, soft):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 5, dtype=D, generator=g, requires_grad=True)
    t = torch.softmax(torch.randn(6, 5, dtype=D, generator=g), -1) if soft else torch.tensor([0, 4, -100, 3, 1, 2])
    kw = dict(reduction=reduction, label_smoothing=smoothing)
    assert torch.autograd.gradcheck(lambda z: cross_entropy_hand(z, t, **kw), (x,))
    w = torch.randn(6, dtype=D, generator=g) if reduction == 'none' else torch.tensor(0.7, dtype=D)
    ours, = torch.autograd.grad(cross_entropy_hand(x, t, **kw), x, w)
    ref, = torch.autograd.grad(F.cross_entropy(x, t, **kw), x, w)
    close(ours, ref, atol=1e-12)

def test_gradcheck_catches_a_backward_without_the_mean():
    class Forgot(CrossEntropyFunction):
        @staticmethod
        def backward(ctx, grad_out):
            logp, q = ctx.saved_tensors
            return (logp.exp() * q.sum(-1, keepdim=True) - q) * grad_out, None, None, None, None
    x = torch.randn(6, 5, dtype=D, requires_grad=True); t = torch.tensor([0, 4, -100, 3, 1, 2])
    assert not torch.autograd.gradcheck(lambda z: Forgot.apply(z, t, -100, 0.0, 'mean'), (x,), raise_exception=False)

@pytest.mark.parametrize('bad, message', [(dict(reduction='avg'), "reduction='avg'"),
                                          (dict(label_smoothing=-0.1), 'label_smoothing=-0.1')])
def test_bad_options_are_named(bad, message):
    x, t = torch.randn(3, 4), torch.tensor([0, 1, 2])
    for fn in (cross_entropy, cross_entropy_hand):
        with pytest.raises(ConfigError, match=None) as e: fn(x, t, **bad)
        assert message in str(e.value)
    with pytest.raises(ConfigError, match='must match the logits'): cross_entropy(x, torch.rand(3, 2))
    with pytest.raises(ConfigError, match="reduction='avg'"): mse_loss(x, x, 'avg')

def _plain(h, W, t): return F.cross_entropy(h.reshape(-1, h.size(-1)) @ W.T, t.reshape(-1), ignore_index=-1)

def _lm_head_problem(seed=4, B=3, T=13, C=8, V=29):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(B, T, C, dtype=D, generator=g, requires_grad=True)
    W = torch.randn(V, C, dtype=D, generator=g, requires_grad=True)
    t = torch.randint(0, V, (B, T), generator=g); t[0, ::4] = -1
    return h, W, t

@pytest.mark.parametrize('chunk_size', [1, 5, 13, 39, 1000])
def test_chunked_equals_plain_in_value_and_gradients(chunk_size):
    h, W, t = _lm_head_problem()
    ref = _plain(h, W, t); gh, gW = torch.autograd.grad(ref, (h, W))
    loss = chunked_cross_entropy(h, W, t, chunk_size=chunk_size); ch, cW = torch.autograd.grad(loss, (h, W))
    close(loss, ref, atol=1e-12); close(ch, gh, atol=1e-12); close(cW, gW, atol=1e-12)

def test_chunked_gradcheck():
    h, W, t = _lm_head_problem(B=2, T=5, C=4, V=7)
    assert torch.autograd.gradcheck(lambda a, b: chunked_cross_entropy(a, b, t, chunk_size=3), (h, W))

def test_chunked_only_one_input_needs_a_gradient():
    h, W, t = _lm_head_problem()
    W2 = W.detach()
    g, = torch.autograd.grad(chunked_cross_entropy(h, W2, t, chunk_size=4), h)
    close(g, torch.autograd.grad(_plain(h, W2, t), h)[0], atol=1e-12)

def test_chunked_all_ignored_is_nan_like_the_plain_loss():
    h, W, t = _lm_head_problem()
    t = torch.full_like(t, -1)
    assert chunked_cross_entropy(h, W, t).isnan() and _plain(h, W, t).isnan()

def test_chunked_bf16_returns_float32():
    h, W, t = _lm_head_problem()
    hb, Wb = h.detach().bfloat16(), W.detach().bfloat16()
    loss = chunked_cross_entropy(hb, Wb, t, chunk_size=7)
    assert loss.dtype == torch.float32
    close(loss, F.cross_entropy((hb.reshape(-1, 8) @ Wb.T).float(), t.reshape(-1), ignore_index=-1), atol=1e-3)

def _largest_saved(fn):
    "Elements of the largest tensor autograd saves for the backward of `fn()`."
    sizes = []
    def pack(x): sizes.append(x.numel()); return x
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x): fn()
    return max(sizes)

def test_chunked_backward_keeps_no_logits():
    N, C, V = 64, 16, 1000
    h = torch.randn(N, C, requires_grad=True); W = torch.randn(V, C, requires_grad=True); t = torch.randint(0, V, (N,))
    assert _largest_saved(lambda: _plain(h, W, t)) >= N * V                       # the plain loss keeps all logits
    assert _largest_saved(lambda: chunked_cross_entropy(h, W, t, chunk_size=8)) == V * C   # the chunked one: its inputs

def test_chunked_shape_errors():
    h, W, t = _lm_head_problem()
    with pytest.raises(ConfigError, match='do not fit'): chunked_cross_entropy(h, W.T, t)
    with pytest.raises(ConfigError, match='chunk_size=0'): chunked_cross_entropy(h, W, t, chunk_size=0)
    with pytest.raises(ConfigError, match='targets'): chunked_cross_entropy(h, W, t[:, :5])
