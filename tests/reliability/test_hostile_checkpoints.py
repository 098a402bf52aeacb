"""Bad and hostile checkpoints: truncated at any point, from another model configuration (the message lists the differing
config fields and every mismatched tensor with both shapes), and malicious pickles whose `__reduce__` would create a file:
loading refuses them (`weights_only=True`) and the file is never created. Also: the safetensors export holds the weights."""
import pickle, shutil
import pytest, torch
from llmtrain.cli import main
from llmtrain.core import CheckpointError, load_config, set_seed
from llmtrain.models import create_model
from llmtrain.preprocessing import load_tokenizer
from llmtrain.training import load_checkpoint
from relutil import TINY, run_main

@pytest.fixture(scope='module')
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp('ck')
    main(['train', *TINY, 'max_iters=4', 'eval_interval=4', f'out_dir={out}', 'name=r'])
    return out/'r'

def copy_run(run, tmp_path):
    dst = tmp_path/'r'; shutil.copytree(run, dst); return dst

@pytest.mark.parametrize('keep', [0, 0.01, 0.5, 0.99])
def test_a_truncated_checkpoint_is_refused_by_name(run, tmp_path, capsys, keep):
    rd = copy_run(run, tmp_path)
    raw = (rd/'ckpt.pt').read_bytes()
    (rd/'ckpt.pt').write_bytes(raw[:int(len(raw) * keep)])
    with pytest.raises(CheckpointError, match='truncated'): load_checkpoint(rd/'ckpt.pt')
    for args in (['train', '--resume', rd], ['generate', '--run', rd, '--n', '5']):
        rc, err = run_main(capsys, *args)
        assert rc == 2 and 'ckpt.pt' in err and 'truncated' in err, err[-600:]

def model_for(run, **changes):
    cfg = load_config(run/'config.yaml', **changes)
    return create_model(cfg, load_tokenizer(run/'tokenizer.json').vocab_size), cfg

@pytest.mark.parametrize('changes', [dict(n_embd=64), dict(n_layer=2), dict(tie_weights=False, bias=True)],
                         ids=['wider', 'deeper', 'untied+bias'])
def test_a_checkpoint_of_another_config_lists_what_differs(run, tmp_path, changes):
    from llmtrain.training import Trainer
    model, cfg = model_for(run, **changes)
    t = Trainer(model, iter(()), [], cfg)
    s = load_checkpoint(run/'ckpt.pt')
    with pytest.raises(CheckpointError) as e: t.load_state_dict(s)
    msg = str(e.value)
    for k in changes: assert k in msg, (k, msg)
    own = model.state_dict()
    for k, v in s['model'].items():                         # every mismatched tensor, with both shapes
        if k in own and v.shape != own[k].shape: assert k in msg and str(tuple(v.shape)) in msg and str(tuple(own[k].shape)) in msg, (k, msg)
        if k not in own: assert k in msg, (k, msg)
    for k in own:
        if k not in s['model']: assert k in msg, (k, msg)

def test_resuming_with_another_config_through_the_cli_names_it(run, tmp_path, capsys):
    rd = copy_run(run, tmp_path)
    rc, err = run_main(capsys, 'train', '--resume', rd, 'n_embd=64')
    assert rc == 2 and 'n_embd' in err and 'does not fit' in err, err[-600:]

class Evil:
    "Unpickling this object would create the file `marker` (harmless, visible proof that code ran)."
    def __init__(self, marker): self.marker = str(marker)
    def __reduce__(self): return (open, (self.marker, 'w'))

def test_a_malicious_pickle_is_refused_and_never_executed(run, tmp_path, capsys):
    marker = tmp_path/'pwned'
    rd = copy_run(run, tmp_path)
    good = load_checkpoint(rd/'ckpt.pt')
    variants = {'zip': lambda p: torch.save({**good, 'model': Evil(marker)}, p),
                'zip-nested': lambda p: torch.save({**good, 'rng': {'python': Evil(marker)}}, p),
                'legacy-pickle': lambda p: p.write_bytes(pickle.dumps({'model': Evil(marker)}, protocol=2))}
    for name, write in variants.items():
        write(rd/'ckpt.pt')
        assert not marker.exists()                           # writing did not run it either
        with pytest.raises(CheckpointError) as e: load_checkpoint(rd/'ckpt.pt')
        assert 'cannot be loaded' in str(e.value), (name, str(e.value))
        for args in (['train', '--resume', rd], ['generate', '--run', rd, '--n', '5'], ['eval', '--run', rd, '--batches', '1']):
            rc, err = run_main(capsys, *args)
            assert rc == 2 and 'ckpt.pt' in err, (name, args[0], err[-600:])
        assert not marker.exists(), f"{name}: loading the checkpoint ran code"

def test_the_safetensors_export_holds_the_checkpoint_weights(run):
    from safetensors.torch import load_file
    st, ck = load_file(run/'model.safetensors'), load_checkpoint(run/'ckpt.pt')['model']
    assert st and all(torch.equal(v, ck[k]) for k, v in st.items())
    assert set(ck) - set(st) <= {'lm_head.weight'}           # only the tied head is stored once
