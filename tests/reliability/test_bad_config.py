"""Bad configuration through `llmtrain train`: unknown keys, wrong types, out-of-range and conflicting values, broken or
hostile YAML files, a resume of nothing. Each is a named error (exit code 2, no traceback) before any work starts:
no run folder appears."""
import pytest
from relutil import TINY, run_cli, run_main

CASES = {   # overrides -> words the message must hold
    'unknown key': (['lrr=1e-3'], ["Unknown config key 'lrr'", "Did you mean 'lr'"]),
    'unknown key, dashes': (['n-layers=2'], ["'n_layers'", "Did you mean 'n_layer'"]),
    'not key=value': (['lr'], ['key=value']),
    'wrong type': (['n_layer=two'], ['n_layer', 'int']),
    'float for int': (['n_layer=2.5'], ['n_layer', 'int']),
    'text for bool': (['bias=maybe'], ['bias', 'bool']),
    'negative lr': (['lr=-1'], ['lr=-1', '> 0']),
    'zero block_size': (['block_size=0'], ['block_size=0', 'positive']),
    'dropout 1.5': (['dropout=1.5'], ['dropout=1.5', '[0, 1)']),
    'min_lr above lr': (['lr=0.01', 'min_lr=0.1'], ['min_lr=0.1', 'lr=0.01']),
    'heads do not divide width': (['n_head=3'], ['n_embd=32', 'n_head=3']),
    'unknown choice': (['optimizer=adamx'], ['optimizer', 'adamw']),
    'rope on an lstm': (['model=lstm', 'pos_emb=rope'], ['pos_emb', 'model=gpt']),
    'swiglu on an rnn': (['model=rnn', 'mlp=swiglu'], ['mlp', 'model=gpt']),
    'infinite lr': (['lr=inf'], ['lr', 'finite']),
    'nan grad_clip': (['grad_clip=nan'], ['grad_clip', 'finite']),
    'zero decay span': (['lr_decay_iters=0'], ['lr_decay_iters']),
    'negative vocab': (['tokenizer=bpe', 'vocab_size=-5'], ['vocab_size']),
    'unparsable value': (['lr=[1'], ['lr']),
}

@pytest.mark.parametrize('case', CASES)
def test_bad_override_is_named_before_any_work(case, tmp_path, capsys):
    overrides, words = CASES[case]
    rc, err = run_main(capsys, 'train', *TINY, *overrides, f'out_dir={tmp_path/"runs"}', 'max_iters=2')
    assert rc == 2 and all(w in err for w in words), err[-800:]
    assert not (tmp_path/'runs').exists(), 'a run folder was created for a config that is wrong'

FILES = {   # YAML text -> words
    'not YAML': ('lr: [1e-3\nn_layer: 2\n', ['not valid YAML']),
    'a list': ('- lr\n- 1e-3\n', ['mapping']),
    'unknown key': ('n_layr: 2\n', ["Did you mean 'n_layer'"]),
    'wrong type': ('max_iters: many\n', ['max_iters']),
    'binary': ('\x00\x01\x02lr: 1\n', ['YAML']),
}

@pytest.mark.parametrize('case', FILES)
def test_bad_config_file_is_named_before_any_work(case, tmp_path, capsys):
    text, words = FILES[case]
    p = tmp_path/'c.yaml'; p.write_text(text)
    rc, err = run_main(capsys, 'train', '--config', p, *TINY, f'out_dir={tmp_path/"runs"}')
    assert rc == 2 and all(w in err for w in words), err[-800:]
    assert not (tmp_path/'runs').exists()

def test_missing_config_file_and_missing_run_to_resume(tmp_path, capsys):
    rc, err = run_main(capsys, 'train', '--config', tmp_path/'nope.yaml', f'out_dir={tmp_path/"runs"}')
    assert rc == 2 and 'does not exist' in err
    rc, err = run_main(capsys, 'train', '--resume', tmp_path/'runs'/'typo', *TINY)
    assert rc == 2 and str(tmp_path/'runs'/'typo') in err, err[-800:]
    assert not (tmp_path/'runs').exists(), 'resuming a run that does not exist created its folder'

def test_a_hostile_yaml_tag_is_refused_and_not_executed(tmp_path, capsys):
    marker = tmp_path/'pwned'
    p = tmp_path/'c.yaml'; p.write_text(f"lr: !!python/object/apply:os.system ['touch {marker}']\n")
    rc, err = run_main(capsys, 'train', '--config', p, f'out_dir={tmp_path/"runs"}')
    assert rc == 2 and 'YAML' in err, err[-800:]
    assert not marker.exists() and not (tmp_path/'runs').exists()

def test_a_real_process_exits_2_with_the_message_and_no_traceback(tmp_path):
    r = run_cli('train', 'dropout=1.5', f'out_dir={tmp_path/"runs"}')
    assert r.returncode == 2 and 'dropout=1.5 must be in [0, 1)' in r.stderr and 'Traceback' not in r.stderr, r.stderr
    assert not (tmp_path/'runs').exists()
