"""A full disk during a checkpoint write: an injected ENOSPC, a real size-limited tmpfs (when the test may mount one), and
`llmtrain train` on a disk too small for its first checkpoint. Each gives an `LLMTrainError` that says the disk is full and
where, and the previous checkpoint stays intact and loadable."""
import errno, os, subprocess, contextlib
import pytest, torch
from llmtrain.core import LLMTrainError, TrainConfig, set_seed
from llmtrain.data import load_corpus, encode_corpus, RandomWindows, eval_windows
from llmtrain.models import create_model
from llmtrain import training
from llmtrain.training import Trainer, load_checkpoint
from relutil import TINY, run_cli

@pytest.fixture(scope='module')
def data(): return encode_corpus(load_corpus('pydoc')[:50_000])

def trainer(data, run_dir, **kw):
    cfg = TrainConfig(**{**dict(n_layer=1, n_head=2, n_embd=32, block_size=16, batch_size=4, max_iters=4, eval_interval=4,
                                eval_iters=2, warmup_iters=1, device='cpu', precision='fp32', progress=False), **kw})
    set_seed(0)
    return Trainer(create_model(cfg, data.tokenizer.vocab_size), RandomWindows(data.train, 16, 4), eval_windows(data.val, 16, 4, 2),
                   cfg, run_dir=run_dir)

@contextlib.contextmanager
def tmpfs(path, size):
    "A tmpfs of `size` mounted at `path` (root only); skips the test where mounting is not allowed."
    path.mkdir()
    r = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(path)], capture_output=True, text=True)
    if r.returncode: pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()[:80]}); the injected-ENOSPC test covers the logic")
    try: yield path
    finally: subprocess.run(['umount', '-l', str(path)], capture_output=True)

def check_named(e, path):
    msg = str(e.value)
    assert isinstance(e.value, LLMTrainError), f"{type(e.value).__name__}: {msg}"
    assert 'No space left' in msg and str(path.parent) in msg and path.name in msg, msg

def test_injected_enospc_names_the_full_disk_and_keeps_the_previous_checkpoint(data, tmp_path, monkeypatch):
    t = trainer(data, tmp_path/'r'); t.fit()
    ck = tmp_path/'r'/'ckpt.pt'
    good = ck.read_bytes()
    def full_disk(obj, f):
        with open(f, 'wb') as fh: fh.write(good[:1000])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(training.torch, 'save', full_disk)
    with pytest.raises(Exception) as e: t.save()
    check_named(e, ck)
    assert ck.read_bytes() == good and load_checkpoint(ck)['iter'] == 4
    assert not list((tmp_path/'r').glob('.*.tmp'))

def test_a_real_full_disk_names_itself_and_keeps_the_previous_checkpoint(data, tmp_path):
    with tmpfs(tmp_path/'fs', '2m') as fs:
        t = trainer(data, fs/'r'); t.fit()
        ck = fs/'r'/'ckpt.pt'
        good = ck.read_bytes()
        free = os.statvfs(fs).f_bavail * os.statvfs(fs).f_frsize
        (fs/'filler').write_bytes(b'\0' * (free - 64 * 1024))         # leave 64 KiB: less than one checkpoint
        with pytest.raises(Exception) as e: t.save()
        check_named(e, ck)
        assert ck.read_bytes() == good and load_checkpoint(ck)['iter'] == 4
        assert not list((fs/'r').glob('.*.tmp'))                    # the half-written file is gone, its space given back

def test_llmtrain_train_on_a_full_disk_exits_with_a_named_error(tmp_path):
    with tmpfs(tmp_path/'fs', '160k') as fs:                            # room for the config files, not for a checkpoint
        r = run_cli('train', *TINY, 'max_iters=4', 'eval_interval=2', 'ckpt_interval=1', f'out_dir={fs}', 'name=r')
        assert r.returncode == 2, r.stderr[-2000:]
        assert 'No space left' in r.stderr and str(fs) in r.stderr and 'Traceback' not in r.stderr, r.stderr[-2000:]
        assert not list((fs/'r').glob('.*.tmp'))
