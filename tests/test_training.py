"""The Trainer end to end: a run folder, exact resume through the CLI, and a sample from a run."""
import subprocess, sys, json
import numpy as np
import pandas as pd
import pytest, torch
from pathlib import Path
from llmtrain.cli import main
from llmtrain.core import CheckpointError
from llmtrain.training import load_checkpoint

SMALL = ['n_layer=2', 'n_head=2', 'n_embd=32', 'block_size=32', 'batch_size=4', 'eval_iters=3', 'log_interval=5',
         'sample_tokens=50', 'progress=false', 'warmup_iters=5', 'dropout=0.1', 'precision=fp32']

def run_cli(*args):
    return subprocess.run([sys.executable, '-m', 'llmtrain.cli', *args], capture_output=True, text=True, timeout=600)

def test_train_writes_a_complete_run_folder(tmp_path):
    r = run_cli('train', *SMALL, 'max_iters=40', 'eval_interval=20', f'out_dir={tmp_path}', 'name=r')
    assert r.returncode == 0, r.stderr
    rd = tmp_path/'r'
    for f in ['config.yaml', 'metrics.csv', 'ckpt.pt', 'model.safetensors', 'tokenizer.json', 'loss.png',
              'sample.txt', 'environment.json']:
        assert (rd/f).is_file() and (rd/f).stat().st_size > 0, f
    df = pd.read_csv(rd/'metrics.csv')
    assert df['iter'].max() == 40 and df['val_loss'].notna().sum() == 2
    assert df['train_loss'].dropna().iloc[-1] < df['train_loss'].dropna().iloc[0]
    assert json.loads((rd/'environment.json').read_text())['precision'] == 'fp32'
    assert 'best validation loss' in r.stdout and '--- sample ---' in r.stdout
    g = run_cli('generate', '--run', str(rd), '--prompt', 'The', '--n', '20')
    assert g.returncode == 0, g.stderr
    assert g.stdout.startswith('The') and len(g.stdout.rstrip('\n')) >= 20
    e = run_cli('eval', '--run', str(rd), '--batches', '3')
    assert e.returncode == 0, e.stderr
    res = json.loads((rd/'eval.json').read_text())
    best = pd.read_csv(rd/'metrics.csv')['val_loss'].dropna().iloc[-1]
    assert abs(res['loss'] - best) < 1e-4          # the run's own last evaluation, recomputed from its checkpoint
    assert abs(res['perplexity'] - np.exp(res['loss'])) < 1e-6 and 0 < res['accuracy'] < 1

@pytest.mark.parametrize('stop', [15, 20])   # mid-interval, and right after an evaluation
def test_resume_is_bitwise_exact(tmp_path, stop):
    common = [*SMALL, 'max_iters=30', 'lr_decay_iters=30', 'eval_interval=10', 'log_interval=1', 'ckpt_interval=5',
              f'out_dir={tmp_path}']
    assert main(['train', *common, 'name=full']) is None
    assert main(['train', *common, f'max_iters={stop}', 'name=part']) is None
    main(['train', '--resume', str(tmp_path/'part'), 'max_iters=30'])
    a, b = pd.read_csv(tmp_path/'full'/'metrics.csv'), pd.read_csv(tmp_path/'part'/'metrics.csv')
    train = lambda df: df.dropna(subset=['train_loss'])[['iter', 'train_loss']].values.tolist()
    val = lambda df: df[df['iter'] % 10 == 0].dropna(subset=['val_loss'])[['iter', 'val_loss']].values.tolist()
    assert len(train(a)) == 30 and train(a) == train(b)          # bitwise: == on floats
    assert len(val(a)) == 3 and val(a) == val(b)
    wa, wb = load_checkpoint(tmp_path/'full'/'ckpt.pt')['model'], load_checkpoint(tmp_path/'part'/'ckpt.pt')['model']
    assert all(torch.equal(wa[k], wb[k]) for k in wa)

def test_bad_input_exits_with_a_named_error(tmp_path):
    r = run_cli('train', 'corpus=' + str(tmp_path/'missing.txt'), f'out_dir={tmp_path}')
    assert r.returncode == 2 and 'neither a registered name' in r.stderr and 'Traceback' not in r.stderr
    r = run_cli('generate', '--run', str(tmp_path))
    assert r.returncode == 2 and 'not a run folder' in r.stderr

def test_truncated_checkpoint_is_refused(tmp_path):
    (tmp_path/'ckpt.pt').write_bytes(b'PK\x03\x04 truncated')
    with pytest.raises(CheckpointError, match='truncated'): load_checkpoint(tmp_path/'ckpt.pt')

def test_image_run_trains_scores_its_test_split_and_evaluates(tmp_path):
    "The seed's CNN through the same pipeline: held-out validation accuracy logged, the test split scored once at the end."
    r = run_cli('train', 'model=seed_cnn', 'corpus=fashion-mnist', 'optimizer=adam', 'lr=1e-3', 'weight_decay=0',
                'schedule=constant', 'warmup_iters=0', 'batch_size=32', 'max_iters=150', 'eval_interval=75',
                'precision=fp32', 'progress=false', f'out_dir={tmp_path}', 'name=cnn')
    assert r.returncode == 0, r.stderr
    rd = tmp_path/'cnn'
    assert not (rd/'tokenizer.json').exists() and not (rd/'sample.txt').exists()
    df = pd.read_csv(rd/'metrics.csv')
    acc = df['val_acc'].dropna()
    assert len(acc) == 2 and acc.iloc[-1] > 0.6                  # 10 classes: chance is 0.1
    test = json.loads((rd/'test.json').read_text())
    assert test['samples'] == 10_000 and test['accuracy'] > 0.6 and 'test accuracy' in r.stdout
    assert np.array(test['confusion_matrix']).sum() == 10_000
    e = run_cli('eval', '--run', str(rd))
    assert e.returncode == 0, e.stderr
    assert abs(json.loads((rd/'eval.json').read_text())['accuracy'] - test['accuracy']) < 1e-9   # same weights, fp32 both
    g = run_cli('generate', '--run', str(rd))
    assert g.returncode == 2 and 'image classifier' in g.stderr

def test_image_run_refuses_a_text_corpus(tmp_path):
    r = run_cli('train', 'model=strong_cnn', 'corpus=pydoc', f'out_dir={tmp_path}', 'name=x')
    assert r.returncode == 2 and 'fashion-mnist' in r.stderr and 'Traceback' not in r.stderr

def test_a_vocabulary_the_corpus_cannot_fill_is_refused(tmp_path):
    r = run_cli('train', 'tokenizer=bpe', 'vocab_size=200000', 'max_iters=2', f'out_dir={tmp_path}', 'name=v')
    assert r.returncode == 2 and 'vocab_size<=' in r.stderr and 'Traceback' not in r.stderr
    assert not (tmp_path/'v').exists()
