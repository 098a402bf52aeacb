"""llmtrain.classification: speaker labels parsed from play text, leak-free block splits, text classifiers, the image pipeline."""
import numpy as np
import pytest, torch
import torch.nn as nn
import torch.nn.functional as F
from llmtrain.core import ConfigError, DataError
from llmtrain.preprocessing import train_tokenizer
from llmtrain.classification import (parse_speeches, block_split, speaker_dataset, TextClassifier, encode_texts, tfidf_baseline,
                                   fit_classifier, seconds_per_epoch, predict, classification_scores, misclassified)
from llmtrain.data import prepare_images, IMAGE_CLASSES

PLAY = """First Citizen:
Before we proceed any further, hear me speak.

All:
Speak, speak.

First Citizen:
You are all resolved rather to die than to famish?

All:
Resolved. resolved.

SCENE II. A room in the palace.

KING RICHARD III:

LADY CAPULET:
Ay, sir.
Two lines here.
"""

def test_parse_speeches():
    assert parse_speeches(PLAY) == [
        ('First Citizen', 'Before we proceed any further, hear me speak.'), ('All', 'Speak, speak.'),
        ('First Citizen', 'You are all resolved rather to die than to famish?'), ('All', 'Resolved. resolved.'),
        ('LADY CAPULET', 'Ay, sir.\nTwo lines here.')]
    assert parse_speeches('') == [] and parse_speeches('just prose.\n\nmore prose') == []
    assert parse_speeches('ROMEO:\r\nBut soft!\r\n\r\nJULIET:  \r\nAy me!') == [('ROMEO', 'But soft!'), ('JULIET', 'Ay me!')]

def test_block_split_contiguous_and_disjoint():
    s = block_split(1000, block=20)
    assert set(s) == {'train', 'val', 'test'}
    assert abs((s == 'test').mean() - 0.2) < 0.02 and abs((s == 'val').mean() - 0.1) < 0.02
    blocks = s.reshape(-1, 20)
    assert (blocks == blocks[:, :1]).all()                     # every block lies wholly in one split

def synthetic_play(n=600, seed=0):
    rng = np.random.default_rng(seed)
    words = {'ALPHA': 'sword battle king', 'BETA': 'love moon night', 'GAMMA': 'gold ship sea', 'DELTA': 'bread corn famine'}
    names = list(words) + ['RARE']
    p = [0.3, 0.25, 0.2, 0.2, 0.05]
    out = []
    for _ in range(n):
        who = names[rng.choice(5, p=p)]
        vocab = words.get(who, 'odd rare').split() + 'the a of and to'.split()
        out.append(f"{who}:\n" + ' '.join(rng.choice(vocab, 8)) + '.')
    return '\n\n'.join(out)

def test_speaker_dataset():
    text = synthetic_play()
    d = speaker_dataset(text, n_speakers=4, block=20)
    assert d['class_names'] == ['ALPHA', 'BETA', 'GAMMA', 'DELTA'] or set(d['class_names']) == {'ALPHA', 'BETA', 'GAMMA', 'DELTA'}
    pairs = [p for p in parse_speeches(text)]
    split = block_split(len(pairs), 20)
    expect = [(t, d['class_names'].index(s)) for (s, t), sp in zip(pairs, split) if sp == 'test' and s in d['class_names']]
    assert d['test'][0] == [t for t, _ in expect] and d['test'][1].tolist() == [l for _, l in expect]
    assert len(d['train'][0]) + len(d['val'][0]) + len(d['test'][0]) == sum(s != 'RARE' for s, _ in pairs)
    with pytest.raises(ConfigError, match='n_speakers=9'): speaker_dataset(text, n_speakers=9)
    with pytest.raises(DataError, match='NAME:'): speaker_dataset('no play here')

def test_tfidf_baseline_learns_and_picks_C_on_val():
    d = speaker_dataset(synthetic_play(), n_speakers=4, block=20)
    pipe = tfidf_baseline(*d['train'], *d['val'], Cs=(0.01, 10.0))
    assert pipe.C in (0.01, 10.0) and set(pipe.val_scores) == {0.01, 10.0}
    s = classification_scores(d['test'][1], torch.as_tensor(pipe.predict(d['test'][0])), 4)
    assert s['accuracy'] > 0.9

def test_classification_scores_match_sklearn():
    from sklearn.metrics import accuracy_score, f1_score, confusion_matrix
    g = torch.Generator().manual_seed(0)
    y, p = torch.randint(0, 5, (300,), generator=g), torch.randint(0, 5, (300,), generator=g)
    s = classification_scores(y, p, 5)
    assert s['accuracy'] == pytest.approx(accuracy_score(y, p))
    assert s['macro_f1'] == pytest.approx(f1_score(y, p, average='macro'))
    assert (s['confusion_matrix'].numpy() == confusion_matrix(y, p)).all()

@pytest.fixture(scope='module')
def tok():
    return train_tokenizer('word', 'the cat sat on the mat . a dog ran', special_tokens=('<pad>',), unk='<unk>')

def test_encode_texts(tok):
    x = encode_texts(['The cat', '', 'the cat sat on the mat . a dog ran again and again'], tok, max_len=6)
    pad = tok.special_tokens['<pad>']
    assert x.shape == (3, 6) and x.dtype == torch.long
    n = len(tok.encode('the cat'))
    assert x[0].tolist()[:n] == tok.encode('the cat') and (x[0, n:] == pad).all()
    assert x[1, 0] == tok.special_tokens['<unk>'] and (x[1, 1:] == pad).all()
    assert (x[2] != pad).all()
    with pytest.raises(ConfigError, match='<pad>'): encode_texts(['x'], train_tokenizer('word', 'a b'), 4)

@pytest.mark.parametrize('kind', ['transformer', 'lstm'])
def test_text_classifier_ignores_padding(kind, tok):
    torch.manual_seed(0)
    pad = tok.special_tokens['<pad>']
    m = TextClassifier(tok.vocab_size, 3, kind, n_embd=16, n_layer=2, n_head=2, max_len=20, pad_id=pad).eval()
    x = encode_texts(['the cat sat', 'a dog'], tok, max_len=5)
    a = m(x)[0]
    b = m(torch.cat([x, torch.full((2, 7), pad)], 1))[0]
    assert torch.allclose(a, b, atol=1e-5)
    logits, loss = m(x, torch.tensor([0, 2]))
    assert logits.shape == (2, 3) and loss.ndim == 0
    with pytest.raises(ConfigError, match='max_len=20'): m(torch.full((1, 21), pad))

def test_text_classifier_errors():
    with pytest.raises(ConfigError, match="kind='gru'"): TextClassifier(10, 2, 'gru')
    with pytest.raises(ConfigError, match='divisible'): TextClassifier(10, 2, 'transformer', n_embd=30, n_head=4)

@pytest.mark.parametrize('kind', ['transformer', 'lstm'])
def test_text_classifier_learns_with_trainer(kind):
    d = speaker_dataset(synthetic_play(800), n_speakers=4, block=20)
    tok = train_tokenizer('word', '\n'.join(d['train'][0]).lower(), special_tokens=('<pad>',), unk='<unk>')
    X = {sp: encode_texts(d[sp][0], tok, 16) for sp in ('train', 'test')}
    torch.manual_seed(0)
    m = TextClassifier(tok.vocab_size, 4, kind, n_embd=32, n_layer=1, n_head=2, max_len=16, pad_id=tok.special_tokens['<pad>'])
    t = fit_classifier(m, (X['train'], d['train'][1]), (X['test'], d['test'][1]), epochs=4, batch_size=16, lr=3e-3,
                       optimizer='adamw', precision='fp32')
    assert classification_scores(d['test'][1], predict(t.raw_model, X['test']), 4)['accuracy'] > 0.8

class Lin(nn.Module):
    def __init__(self): super().__init__(); self.f = nn.Linear(2, 2)
    def forward(self, x, targets=None):
        z = self.f(x); return z, (F.cross_entropy(z, targets) if targets is not None else None)

def test_fit_classifier_epochs_and_timing():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 2, generator=g); y = (x[:, 0] > 0).long()
    t = fit_classifier(Lin(), (x, y), (x[:100], y[:100]), epochs=3, batch_size=40, lr=0.1, precision='fp32', log_interval=5)
    assert t.iter == 30 and t.steps_per_epoch == 10
    assert [h['iter'] for h in t.history if 'val_loss' in h] == [10, 20, 30]
    assert seconds_per_epoch(t) > 0
    assert (predict(t.raw_model, x).argmax(-1) == y).float().mean() > 0.95
    with pytest.raises(DataError, match='batch_size'): fit_classifier(Lin(), (x[:5], y[:5]), batch_size=32)
    with pytest.raises(ConfigError, match='epochs=0'): fit_classifier(Lin(), (x, y), epochs=0)

def test_prepare_images_digits_and_errors():
    d = prepare_images('digits')
    (xtr, ytr), (xte, yte) = d.train, d.test
    assert xtr.shape[1:] == (1, 8, 8) and len(xtr) + len(xte) == 1797 and abs(len(xte) - 360) <= 1
    assert 0 <= float(xtr.min()) and float(xtr.max()) <= 1 and ytr.dtype == torch.int64
    s = prepare_images('digits', train_subset=100, test_subset=50)
    assert len(s.train[0]) == 100 and len(s.test[0]) == 50
    with pytest.raises(ConfigError, match="'cifar'"): prepare_images('cifar')

def test_load_fashion_mnist_real_files():
    d = prepare_images('fashion-mnist', train_subset=500)
    assert d.train[0].shape == (500, 1, 28, 28) and d.test[0].shape == (10000, 1, 28, 28)
    assert d.class_names == IMAGE_CLASSES['fashion-mnist'] and torch.bincount(d.test[1]).tolist() == [1000] * 10

def test_cnn_on_digits_learns():
    from llmtrain.models import StrongCNN
    d = prepare_images('digits')
    torch.manual_seed(0)
    t = fit_classifier(StrongCNN(image_size=8), d.train, d.test, epochs=3, batch_size=32, lr=1e-3, precision='fp32')
    assert classification_scores(d.test[1], predict(t.raw_model, d.test[0]), 10)['accuracy'] > 0.9

def test_misclassified():
    assert misclassified(torch.tensor([1, 2, 3, 4]), torch.tensor([1, 0, 3, 0])).tolist() == [1, 3]
    i = misclassified(torch.zeros(100), torch.ones(100), n=7, seed=1)
    assert len(i) == 7 and i.tolist() == sorted(i.tolist())
