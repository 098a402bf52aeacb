"""The Trainer under torchrun on CPU (gloo): DDP and FSDP2 give the 1-process losses for the same global batch, and a
checkpoint resumes across world sizes; an image run (the seed's CNN) too. Each run is a real
`torchrun --standalone --nproc_per_node=2` launch."""
import json, os, subprocess, sys
import pandas as pd
import pytest

COMMON = ['n_layer=2', 'n_head=2', 'n_embd=32', 'block_size=16', 'dropout=0.0', 'eval_iters=4', 'log_interval=1',
          'eval_interval=10', 'max_iters=20', 'lr_decay_iters=20', 'warmup_iters=2', 'sample_tokens=20', 'progress=false',
          'precision=fp32', 'device=cpu', 'corpus=pydoc']

def launch(nproc, *args, tmp, common=COMMON):
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    cmd = ([sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}'] if nproc > 1
           else [sys.executable]) + ['-m', 'llmtrain.cli', 'train', *common, f'out_dir={tmp}', *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return r

def losses(run_dir):
    df = pd.read_csv(run_dir/'metrics.csv')
    return df.dropna(subset=['train_loss'])['train_loss'].tolist(), df.dropna(subset=['val_loss'])['val_loss'].tolist()

@pytest.fixture(scope='module')
def single(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('single')
    launch(1, 'batch_size=8', 'name=one', tmp=tmp)
    return tmp/'one'

@pytest.mark.parametrize('strategy', ['ddp', 'fsdp'])
def test_two_processes_equal_one_with_the_same_global_batch(single, tmp_path, strategy):
    launch(2, 'batch_size=4', f'distributed={strategy}', 'name=two', tmp=tmp_path)
    (a_tr, a_val), (b_tr, b_val) = losses(single), losses(tmp_path/'two')
    assert len(a_tr) == len(b_tr) == 20
    assert max(abs(x - y) for x, y in zip(a_tr, b_tr)) < 1e-5, (a_tr, b_tr)
    assert max(abs(x - y) for x, y in zip(a_val, b_val)) < 1e-5
    assert (tmp_path/'two'/'model.safetensors').is_file() and (tmp_path/'two'/'sample.txt').is_file()

def test_a_two_process_checkpoint_resumes_in_one_process(single, tmp_path):
    launch(2, 'batch_size=4', 'distributed=fsdp', 'name=x', 'max_iters=10', tmp=tmp_path)
    launch(1, '--resume', str(tmp_path/'x'), 'batch_size=8', 'max_iters=20', tmp=tmp_path)
    (a_tr, _), (b_tr, _) = losses(single), losses(tmp_path/'x')
    assert len(b_tr) == 20 and max(abs(x - y) for x, y in zip(a_tr, b_tr)) < 1e-5, (a_tr, b_tr)

def test_a_one_process_checkpoint_resumes_in_two(single, tmp_path):
    launch(1, 'batch_size=8', 'name=y', 'max_iters=10', tmp=tmp_path)
    launch(2, '--resume', str(tmp_path/'y'), 'batch_size=4', 'max_iters=20', tmp=tmp_path)
    (a_tr, _), (b_tr, _) = losses(single), losses(tmp_path/'y')
    assert len(b_tr) == 20 and max(abs(x - y) for x, y in zip(a_tr, b_tr)) < 1e-5, (a_tr, b_tr)

MUON = ['optimizer=muon', 'lr=3e-3', 'muon_lr=0.02']

def one_process(tmp_path_factory, name, *args):
    "A 1-process run (batch 8) of `args` in a fresh module-wide folder: the reference of a 2-process comparison."
    tmp = tmp_path_factory.mktemp(name)
    launch(1, 'batch_size=8', 'name=one', *args, tmp=tmp)
    return tmp/'one'

def two_equal_one(single, tmp_path, strategy, n, *args):
    "Run `args` in 2 processes (batch 4 each) under `strategy`; assert `n` train losses and the val losses equal `single`'s to 1e-5."
    launch(2, 'batch_size=4', f'distributed={strategy}', 'name=two', *args, tmp=tmp_path)
    (a_tr, a_val), (b_tr, b_val) = losses(single), losses(tmp_path/'two')
    assert len(a_tr) == len(b_tr) == n and a_tr[-1] < a_tr[0], (a_tr, b_tr)
    assert max(abs(x - y) for x, y in zip(a_tr + a_val, b_tr + b_val)) < 1e-5, (a_tr, b_tr)
    return a_tr

@pytest.fixture(scope='module')
def single_muon(tmp_path_factory): return one_process(tmp_path_factory, 'single_muon', *MUON)

@pytest.mark.parametrize('strategy', ['ddp', 'fsdp'])
def test_muon_in_two_processes_equals_one(single_muon, tmp_path, strategy):
    "Muon under DDP, and under FSDP2 (each process gathers a sharded matrix, orthogonalises it whole, keeps its rows)."
    a_tr = two_equal_one(single_muon, tmp_path, strategy, 20, *MUON)
    assert a_tr[-1] < a_tr[0] - 0.5

IMAGES = ['model=seed_cnn', 'corpus=fashion-mnist', 'optimizer=adam', 'lr=1e-3', 'weight_decay=0', 'schedule=constant',
          'warmup_iters=0', 'max_iters=12', 'eval_interval=6', 'log_interval=1', 'precision=fp32', 'device=cpu',
          'progress=false']

@pytest.fixture(scope='module')
def single_images(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('single_images')
    launch(1, 'batch_size=32', 'name=one', tmp=tmp, common=IMAGES)
    return tmp/'one'

@pytest.mark.parametrize('strategy', ['ddp', 'fsdp'])
def test_an_image_run_in_two_processes_equals_one(single_images, tmp_path, strategy):
    "The seed's CNN on Fashion-MNIST: each process takes its rows of the global batch, so the losses are the 1-process ones."
    launch(2, 'batch_size=16', f'distributed={strategy}', 'name=two', tmp=tmp_path, common=IMAGES)
    (a_tr, a_val), (b_tr, b_val) = losses(single_images), losses(tmp_path/'two')
    assert len(a_tr) == len(b_tr) == 12 and max(abs(x - y) for x, y in zip(a_tr, b_tr)) < 1e-5, (a_tr, b_tr)
    assert max(abs(x - y) for x, y in zip(a_val, b_val)) < 1e-5
    ta, tb = (json.loads((d/'test.json').read_text()) for d in (single_images, tmp_path/'two'))
    assert ta['samples'] == tb['samples'] == 10_000 and abs(ta['accuracy'] - tb['accuracy']) < 1e-3

LORA = ['lora_rank=4', 'lora_alpha=8', 'lora_targets=all', 'lr=1e-2', 'max_iters=8', 'lr_decay_iters=8', 'eval_interval=4']

@pytest.fixture(scope='module')
def single_lora(tmp_path_factory): return one_process(tmp_path_factory, 'single_lora', *LORA)

@pytest.mark.parametrize('strategy', ['ddp', 'fsdp'])
def test_a_lora_run_in_two_processes_equals_one(single_lora, tmp_path, strategy):
    "A LoRA run (frozen base, adapters only) under torchrun: the 1-process losses, and `load_run` opens the result with its adapters."
    import torch
    from llmtrain.lora import lora_modules
    from llmtrain.training import load_run
    two_equal_one(single_lora, tmp_path, strategy, 8, *LORA)
    (m1, _, _), (m2, tok, _) = load_run(single_lora), load_run(tmp_path/'two')
    assert len(lora_modules(m2)) == 8 and (tmp_path/'two'/'sample.txt').is_file()
    x = torch.tensor([tok.encode('def f(x):')])
    torch.testing.assert_close(m1(x)[0], m2(x)[0], atol=1e-5, rtol=0)

def test_an_init_from_lora_run_in_two_processes_equals_one(tmp_path):
    "LoRA on a published model (init_from: its shape, not the config's) under FSDP2: the 1-process losses, and rank 0's single-process copy (for the sample) takes the trained weights."
    import torch
    from llmtrain.models import GPT, GPTConfig, LLAMA
    from llmtrain.pretrained import save_pretrained
    from llmtrain.preprocessing import train_tokenizer
    from llmtrain.data import load_corpus
    tok = train_tokenizer('char', load_corpus('pydoc'))
    torch.manual_seed(0)
    pub = save_pretrained(GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=48, **LLAMA)), tok, tmp_path/'pub')
    args = [f'init_from={pub}', *LORA]
    launch(1, 'batch_size=8', 'name=one', *args, tmp=tmp_path)
    two_equal_one(tmp_path/'one', tmp_path, 'fsdp', 8, *args)       # before: rank 0 built the config's shape for the sample and failed
    assert (tmp_path/'two'/'sample.txt').is_file()
