"""Test set-up: a private data cache, seeded from ../shared/data exactly as a user on an offline cluster would."""
import os, shutil
# One thread per test process: the suite runs two xdist workers on two cores, and two OpenMP pools of two threads
# on two cores spin against each other (a small model ran ~100x slower that way). Kernels and subprocesses inherit it.
os.environ.setdefault('OMP_NUM_THREADS', '1')
os.environ.setdefault('MKL_NUM_THREADS', '1')
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
SEED_DIRS = [ROOT.parent/'shared'/'data', Path.home()/'.cache'/'llmtrain'/'corpora']

@pytest.fixture(scope='session', autouse=True)
def llmtrain_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp('llmtrain-cache')
    (cache/'corpora').mkdir()
    for d in SEED_DIRS:
        for f in (d.glob('*.txt') if d.is_dir() else []):
            if not (cache/'corpora'/f.name).exists(): shutil.copy(f, cache/'corpora'/f.name)
    old = os.environ.get('LLMTRAIN_CACHE')
    os.environ['LLMTRAIN_CACHE'] = str(cache)
    os.environ.setdefault('MPLBACKEND', 'Agg')
    yield cache
    if old is None: os.environ.pop('LLMTRAIN_CACHE', None)
    else: os.environ['LLMTRAIN_CACHE'] = old

def has_shakespeare():
    return any((d/'tinyshakespeare.txt').is_file() for d in SEED_DIRS)
