"""The evaluation metrics against scikit-learn and PyTorch, fed in random batchings; `evaluate` without per-batch syncs."""
import math, warnings
import numpy as np
import pytest, torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings, HealthCheck, strategies as st
from sklearn.metrics import (accuracy_score, top_k_accuracy_score, precision_recall_fscore_support, confusion_matrix,
                             f1_score)
from llmtrain.evaluation import (Accuracy, TopKAccuracy, ConfusionMatrix, LMMetrics, MeanLoss, MetricError,
                                 UndefinedMetricWarning, precision_recall_f1, classification_report, evaluate,
                                 forbid_host_sync, token_losses, token_byte_lengths, plot_confusion_matrix,
                                 plot_per_class_f1, plot_token_losses)
from llmtrain.models import GPT, GPTConfig

TOL = 1e-6
ZERO_DIVISIONS = ['warn', 0, 1, np.nan]

def same(a, b):
    "Largest absolute difference of two arrays or floats; NaN must match NaN."
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert a.shape == b.shape and np.array_equal(np.isnan(a), np.isnan(b)), (a, b)
    return float(np.nanmax(np.abs(a - b), initial=0.0))

def make_case(seed, n, C, kind):
    "Scores (n, C) float64 and labels (n,): 'random', 'absent' (a third of the classes never occur) or 'one' (one class)."
    g = torch.Generator().manual_seed(seed)
    absent = torch.randperm(C, generator=g)[:max(1, C // 3)].tolist() if kind == 'absent' and C > 2 else []
    present = [c for c in range(C) if c not in absent]
    if kind == 'one': y = torch.full((n,), present[int(torch.randint(len(present), (1,), generator=g))])
    else: y = torch.tensor(present)[torch.randint(len(present), (n,), generator=g)]
    s = torch.randn(n, C, generator=g, dtype=torch.float64)
    s[torch.arange(n), y] += 1.5
    if absent: s[:, absent] -= 3
    return s, y

def feed(metrics, s, y, cuts):
    "Update every metric batch by batch (boundaries `cuts`) with host reads forbidden."
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(y))), len(y)]
    with forbid_host_sync():
        for a, b in zip(bounds[:-1], bounds[1:]):
            for m in metrics: m.update(s[a:b], y[a:b])

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 250), C=st.integers(2, 10),
       kind=st.sampled_from(['random', 'absent', 'one']), cuts=st.lists(st.integers(1, 249), max_size=8))
def test_streaming_metrics_equal_sklearn(seed, n, C, kind, cuts):
    s, y = make_case(seed, n, C, kind)
    acc, cm, tks = Accuracy(), ConfusionMatrix(C), [TopKAccuracy(k) for k in range(1, C + 1)]
    feed([acc, cm, *tks], s, y, cuts)
    yt, yp, L = y.numpy(), s.argmax(1).numpy(), list(range(C))
    assert same(acc.compute(), accuracy_score(yt, yp)) <= TOL
    assert np.array_equal(cm.compute().numpy(), confusion_matrix(yt, yp, labels=L))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        if C > 2:
            for k, t in enumerate(tks, 1):
                assert same(t.compute(), top_k_accuracy_score(yt, s.numpy(), k=k, labels=L)) <= TOL
        for zd in ZERO_DIVISIONS:
            for labels in [None, sorted(set(yt) | set(yp))]:
                for avg in ['micro', 'macro', 'weighted', None]:
                    ours = cm.precision_recall_f1(avg, labels=labels, zero_division=zd)
                    ref = precision_recall_fscore_support(yt, yp, average=avg, labels=L if labels is None else labels,
                                                          zero_division=zd)
                    for o, r in zip(ours[:3], ref[:3]): assert same(o, r) <= TOL, (avg, zd, labels)
                    if avg is None: assert np.array_equal(ours[3].numpy(), ref[3])
            assert same(cm.f1('macro', zero_division=zd), f1_score(yt, yp, average='macro', labels=L, zero_division=zd)) <= TOL

def test_all_one_class_and_absent_classes():
    y = torch.full((40,), 2)
    for preds in (torch.full((40,), 2), torch.cat([torch.full((30,), 2), torch.full((10,), 0)])):
        cm = ConfusionMatrix(4); feed([cm], preds, y, [7, 20])
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            for avg in ['micro', 'macro', 'weighted', None]:
                for labels in [None, sorted(set(y.tolist()) | set(preds.tolist()))]:
                    ref = precision_recall_fscore_support(y.numpy(), preds.numpy(), average=avg, zero_division='warn',
                                                          labels=list(range(4)) if labels is None else labels)
                    for o, r in zip(cm.precision_recall_f1(avg, labels=labels)[:3], ref[:3]): assert same(o, r) <= TOL

def test_zero_division_default_is_zero_with_a_warning():
    yt = np.array([0, 0, 1, 1, 2]); yp = np.array([0, 1, 1, 1, 1])             # class 2 is never predicted
    cm = ConfusionMatrix(3); cm.update(torch.from_numpy(yp), torch.from_numpy(yt))
    with pytest.warns(UndefinedMetricWarning, match=r'Precision is ill-defined.*\[2\]'):
        p = cm.precision(None)
    assert p[2].item() == 0.0
    with pytest.warns(Warning):
        ref = precision_recall_fscore_support(yt, yp, average=None)[0]          # scikit-learn's default: 'warn'
    assert same(p, ref) <= TOL
    assert cm.precision(None, zero_division=1)[2].item() == 1.0
    assert math.isnan(cm.precision(None, zero_division=np.nan)[2].item())
    assert same(cm.precision('macro', zero_division=np.nan), (1 / 1 + 2 / 4) / 2) <= TOL   # NaN left out of the mean
    with pytest.raises(MetricError, match='zero_division'): cm.precision(zero_division=0.5)
    with pytest.raises(MetricError, match='average='): cm.f1('samples')

def test_binary_average_is_the_positive_class():
    y = torch.tensor([0] * 950 + [1] * 50)
    pred = torch.cat([torch.zeros(920), torch.ones(30), torch.zeros(10), torch.ones(40)]).long()
    cm = ConfusionMatrix(2); cm.update(pred, y)
    assert same(cm.f1('binary'), f1_score(y.numpy(), pred.numpy())) <= TOL
    assert same(cm.f1('binary'), 2 / 3) <= TOL and cm.accuracy() == 0.96

def test_merge_and_reset():
    s, y = make_case(3, 120, 6, 'random')
    whole, left, right = ConfusionMatrix(6), ConfusionMatrix(6), ConfusionMatrix(6)
    whole.update(s, y); left.update(s[:50], y[:50]); right.update(s[50:], y[50:])
    assert torch.equal(left.merge(right).compute(), whole.compute())
    a = Accuracy(); a.update(s, y); a.reset()
    with pytest.raises(MetricError, match='before any update'): a.compute()
    with pytest.raises(MetricError, match='Cannot merge'): Accuracy().merge(whole)

def test_bad_inputs_are_refused():
    s, y = make_case(0, 10, 3, 'random')
    with pytest.raises(MetricError, match='do not fit'): Accuracy().update(s, y[:9])
    with pytest.raises(MetricError, match='expected num_classes=4'): ConfusionMatrix(4).update(s, y)
    cm = ConfusionMatrix(3); cm.update(torch.tensor([0, 5]), torch.tensor([0, 1]))       # checked at compute, not update
    with pytest.raises(MetricError, match=r'outside \[0, 3\)'): cm.compute()
    with pytest.raises(MetricError, match='pass scores'): TopKAccuracy(2).update(y, y)

def test_forbid_host_sync_catches_reads_and_restores():
    t = torch.arange(3.0)
    with forbid_host_sync():
        u = t * 2
        for f in (lambda: u.sum().item(), lambda: u.tolist(), lambda: bool(u[0] > 0), lambda: float(u[0]), lambda: u.cpu()):
            with pytest.raises(MetricError, match='reads a value on the host'): f()
    assert u.sum().item() == 6.0

def test_ignore_index_in_classification_metrics():
    s, y = make_case(5, 60, 4, 'random')
    y_pad = y.clone(); y_pad[::3] = -1
    keep = y_pad != -1
    acc, cm = Accuracy(ignore_index=-1), ConfusionMatrix(4, ignore_index=-1)
    feed([acc, cm], s, y_pad, [10, 33])
    assert same(acc.compute(), accuracy_score(y[keep].numpy(), s[keep].argmax(1).numpy())) <= TOL
    assert np.array_equal(cm.compute().numpy(), confusion_matrix(y[keep].numpy(), s[keep].argmax(1).numpy(), labels=range(4)))

def test_lm_metrics_match_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits = [torch.randn(b, 9, 13, generator=g) for b in (2, 1, 5)]
    targets = [torch.randint(13, (b, 9), generator=g) for b in (2, 1, 5)]
    targets[1][:] = -1; targets[2][1, 4:] = -1
    m, m_loss = LMMetrics(), LMMetrics(token_bytes=torch.tensor([1] * 12 + [2]))
    with forbid_host_sync():
        for l, t in zip(logits, targets):
            m.update(l, t); m_loss.update(l, t, loss=F.cross_entropy(l.view(-1, 13), t.view(-1), ignore_index=-1))
    L, T = torch.cat([l.view(-1, 13) for l in logits]), torch.cat([t.view(-1) for t in targets])
    ref = F.cross_entropy(L.double(), T, ignore_index=-1).item()
    r, r2 = m.compute(), m_loss.compute()
    n = int((T != -1).sum())
    assert abs(r['loss'] - ref) < TOL and abs(r2['loss'] - ref) < TOL and r['tokens'] == n
    assert abs(r['perplexity'] - math.exp(ref)) < 1e-5 and abs(r['bits_per_token'] - ref / math.log(2)) < TOL
    assert abs(r2['bits_per_byte'] - ref * n / math.log(2) / (n + int((T == 12).sum()))) < TOL
    keep = T != -1
    assert r['accuracy'] == (L.argmax(-1)[keep] == T[keep]).double().mean().item()

def tiny_gpt(vocab=37, dropout=0.1):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=vocab, n_layer=1, n_head=2, n_embd=32, block_size=16, dropout=dropout))

def guarded(batches):
    "Yield `batches` with host reads forbidden until the last one has been taken."
    with forbid_host_sync(): yield from batches

def test_evaluate_lm_syncs_once_and_matches_the_model_loss():
    model = tiny_gpt()
    batches = [(torch.randint(37, (3, 16)), torch.randint(37, (3, 16))) for _ in range(4)]
    model.train()
    res = evaluate(model, guarded(batches), task='lm')
    assert model.training
    with torch.no_grad():
        model.eval(); mean = sum(model(x, y)[1].item() for x, y in batches) / len(batches)
    assert abs(res['loss'] - mean) < 1e-6 and res['tokens'] == 4 * 3 * 16
    assert res == evaluate(model, batches, task='lm')                          # eval mode: dropout off, deterministic
    assert evaluate(model, iter(batches), max_batches=2)['tokens'] == 2 * 3 * 16
    with pytest.raises(MetricError, match='no batches'): evaluate(model, [])

class MLP(nn.Module):
    def __init__(self, n_in=12, n_classes=7):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_in, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, n_classes))
    def forward(self, x, y=None):
        logits = self.net(x)
        return logits, (F.cross_entropy(logits, y) if y is not None else None)

def test_evaluate_classification_matches_sklearn():
    torch.manual_seed(1)
    model, x, y = MLP(), torch.randn(203, 12), torch.randint(7, (203,))
    batches = [(x[i:i + 50], y[i:i + 50]) for i in range(0, 203, 50)]               # the last batch has 3 samples
    res = evaluate(model, guarded(batches), task='classification')
    with torch.no_grad(): model.eval(); s = model(x)[0]
    yt, yp = y.numpy(), s.argmax(1).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        ref = dict(accuracy=accuracy_score(yt, yp), top5_accuracy=top_k_accuracy_score(yt, s.numpy(), k=5),
                   macro_f1=f1_score(yt, yp, average='macro', labels=range(7)),
                   weighted_f1=f1_score(yt, yp, average='weighted', labels=range(7)),
                   micro_f1=f1_score(yt, yp, average='micro'))
        per_class = f1_score(yt, yp, average=None, labels=range(7))
    for k, v in ref.items(): assert abs(res[k] - v) < TOL, k
    assert same(res['per_class_f1'], per_class) <= TOL
    assert res['confusion_matrix'] == confusion_matrix(yt, yp, labels=range(7)).tolist() and res['samples'] == 203
    assert abs(res['loss'] - F.cross_entropy(s, y).item()) < 1e-5                   # weighted by batch size

def test_token_losses_use_the_promised_context():
    model = tiny_gpt(dropout=0.0).eval()
    ids = torch.randint(37, (45,), generator=torch.Generator().manual_seed(4))
    tl = token_losses(model, ids, block_size=16)
    assert tl.shape == (44,)
    with torch.no_grad():
        for j in range(44):
            start = 0 if j < 16 else ((j - 16) // 8 + 1) * 8
            lg = model(ids[start:j + 1][None], ids[start + 1:j + 2][None])[0]
            assert abs(F.cross_entropy(lg[0, -1:], ids[j + 1:j + 2]).item() - tl[j].item()) < 1e-5, j

def test_report_and_plots(tmp_path):
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    cm = torch.tensor([[3, 1, 0], [1, 4, 0], [0, 2, 0]])
    rep = classification_report(cm, ['a', 'b', 'c'], zero_division=0)
    assert list(rep.index) == ['a', 'b', 'c', 'micro avg', 'macro avg', 'weighted avg']
    assert abs(rep.loc['micro avg', 'f1'] - 7 / 11) < TOL and rep.loc['c', 'support'] == 2
    ax = plot_confusion_matrix(cm, ['a', 'b', 'c'], normalize='true')
    assert [t.get_text() for t in ax.get_xticklabels()] == ['a', 'b', 'c']
    with pytest.raises(MetricError, match='normalize'): plot_confusion_matrix(cm, normalize='all')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UndefinedMetricWarning)
        ax = plot_per_class_f1(cm, ['a', 'b', 'c'])
    assert [round(p.get_height(), 6) for p in ax.patches] == [0.75, round(8 / 12, 6), 0.0]
    text = 'ab\ncd e'
    ax = plot_token_losses(text, torch.arange(len(text) - 1.0), width=4)
    assert len(ax.texts) == len(text)
    with pytest.raises(MetricError, match='one loss per character'): plot_token_losses(text, torch.zeros(3))
    plt.close('all')

def test_token_byte_lengths():
    from llmtrain.preprocessing import CharTokenizer
    tok = CharTokenizer.train('ab€é')
    assert dict(zip(tok.chars, token_byte_lengths(tok).tolist())) == {'a': 1, 'b': 1, 'é': 2, '€': 3}
