"""In-context tasks (chapter 7b) where a notebook test is not enough: lm-eval itself on an llmtrain run, `llmtrain eval --tasks`
through the CLI and the run registry, `val_bpb` in a run's metrics, and bad task files."""
import json, os, subprocess, sys
from pathlib import Path
import pandas as pd
import pytest, torch
from llmtrain.cli import main
from llmtrain.tasks import (Task, TaskError, load_task, get_task, score_task, loglikelihoods, encode_pair, lm_eval_model,
                            run_lm_eval, _score_rows)
from llmtrain.training import load_run

ROOT = Path(__file__).resolve().parents[1]
TINY = ['n_layer=1', 'n_head=2', 'n_embd=32', 'block_size=128', 'batch_size=4', 'eval_iters=2', 'eval_interval=5',
        'log_interval=5', 'max_iters=5', 'sample_tokens=0', 'progress=false', 'warmup_iters=2', 'precision=fp32', 'device=cpu']

@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
    "A char GPT trained 5 steps on the pydoc corpus: a real run folder."
    out = tmp_path_factory.mktemp('runs')
    main(['train', *TINY, f'out_dir={out}', 'name=tiny'])
    return out/'tiny'

def write_task(folder, rows, **spec):
    folder.mkdir(parents=True, exist_ok=True)
    (folder/'t.jsonl').write_text(''.join((r if isinstance(r, str) else json.dumps(r)) + '\n' for r in rows))
    (folder/'t.yaml').write_text(json.dumps(dict(dict(type='multiple_choice', data='t.jsonl'), **spec)))   # JSON is YAML
    return folder/'t.yaml'

def test_lm_eval_harness_agrees_with_llmtrain(run_dir, tmp_path, monkeypatch):
    "lm-eval's simple_evaluate on the registered `llmtrain` model (by name, from the run folder) and a task from local files: the same log-likelihoods to 1e-4, the same accuracies."
    import lm_eval
    from lm_eval.tasks import TaskManager
    from llmtrain.tasks import write_lm_eval_task
    monkeypatch.setenv('HF_DATASETS_OFFLINE', '1'); monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setenv('HF_DATASETS_CACHE', str(tmp_path/'hf'))
    model, tok, _ = load_run(run_dir)
    task = get_task('pydoc_cloze', n=20)
    name = write_lm_eval_task(task, tmp_path/'tasks')
    lm_eval_model()                                               # registers 'llmtrain'
    out = lm_eval.simple_evaluate(model='llmtrain', model_args=f'run={run_dir}', tasks=[name], log_samples=True,
                                  task_manager=TaskManager(include_path=str(tmp_path/'tasks')), bootstrap_iters=0)
    ours = score_task(model, tok, task)
    theirs = {s['doc_id']: [r[0] for r in s['filtered_resps']] for s in out['samples'][name]}
    assert len(theirs) == 20 and all(len(theirs[i]) == 4 for i in range(20))
    assert max(abs(a - b) for i, l in enumerate(ours['lls']) for a, b in zip(l, theirs[i])) < 1e-4
    assert out['results'][name]['acc,none'] == ours['acc'] and out['results'][name]['acc_norm,none'] == ours['acc_norm']

def test_lm_eval_model_scores_an_lstm(tmp_path):
    "The LM subclass takes any llmtrain model, an LSTM included (no transformers counterpart): its requests give the scorer's numbers."
    from lm_eval.api.instance import Instance
    from llmtrain.models import RNNLM, RNNConfig
    from llmtrain.preprocessing import CharTokenizer
    tok = CharTokenizer.train('abcdefgh xyz.\n')
    torch.manual_seed(0)
    m = RNNLM(RNNConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_embd=16, cell='lstm')).eval()
    lm = lm_eval_model()(model=m, tokenizer=tok)
    reqs = [Instance('loglikelihood', {}, (c, k), i) for i, (c, k) in enumerate([('abc ', 'def'), ('abc', ' xyz'), ('', 'hg.')])]
    got = lm.loglikelihood(reqs)
    ref = _score_rows(m, [encode_pair(tok, *r.args) for r in reqs], 32, 1)
    assert [g for _, g in got] == [g for _, g in ref] and max(abs(a[0] - b[0]) for a, b in zip(got, ref)) < 1e-5
    (roll,) = lm.loglikelihood_rolling([Instance('loglikelihood_rolling', {}, ('abc def',), 0)])
    assert roll < 0 and roll == pytest.approx(loglikelihoods(m, [encode_pair(tok, '', 'abc def')])[0][0], abs=1e-4)
    (gen,) = lm.generate_until([Instance('generate_until', {}, ('abc', dict(until=['.'], max_gen_toks=5)), 0)])
    assert isinstance(gen, str) and '.' not in gen and len(gen) <= 5

def test_cli_eval_tasks_writes_eval_json_the_registry_reads(run_dir, tmp_path):
    "`llmtrain eval --tasks` prints a table and writes eval.json (nested and flat); load_runs sees task columns; val_bpb is in metrics.csv."
    from llmtrain.analysis import load_runs
    yml = write_task(tmp_path/'mine', [dict(prompt='The capital of France is', choices=['Paris', 'Rome'], gold=0)] * 3)
    r = subprocess.run([sys.executable, '-m', 'llmtrain.cli', 'eval', '--run', str(run_dir), '--batches', '2', '--device', 'cpu',
                        '--tasks', f'pydoc_cloze,addition,{yml}', '--limit', '4'], capture_output=True, text=True, timeout=600,
                       env={**os.environ, 'PYTHONPATH': str(ROOT)})
    assert r.returncode == 0, r.stderr
    assert 'pydoc_cloze' in r.stdout and 'exact_match' in r.stdout and 'baseline' in r.stdout
    res = json.loads((run_dir/'eval.json').read_text())
    assert set(res['tasks']) == {'pydoc_cloze', 'addition', 't'}
    assert res['task/pydoc_cloze/acc'] == res['tasks']['pydoc_cloze']['acc'] and res['task/pydoc_cloze/n'] == 4
    assert res['task/pydoc_cloze/baseline'] == 0.25 and res['task/t/baseline'] == 0.5
    assert 0 < res['bits_per_byte'] < 10
    df = load_runs(run_dir.parent)
    assert df.loc[0, 'eval_task/pydoc_cloze/acc'] == res['task/pydoc_cloze/acc']
    m = pd.read_csv(run_dir/'metrics.csv')
    assert 'val_bpb' in m and m['val_bpb'].notna().sum() == m['val_loss'].notna().sum() >= 1
    bad = subprocess.run([sys.executable, '-m', 'llmtrain.cli', 'eval', '--run', str(run_dir), '--batches', '1', '--tasks', 'hellaswag'],
                         capture_output=True, text=True, timeout=300, env={**os.environ, 'PYTHONPATH': str(ROOT)})
    assert bad.returncode == 2 and "Unknown task 'hellaswag'" in bad.stderr

def test_val_bpb_equals_eval_bits_per_byte(run_dir):
    "The Trainer's last val_bpb and `llmtrain eval`'s bits_per_byte on the same windows (eval_iters batches) agree."
    from llmtrain.cli import eval_cmd
    import contextlib, io
    with contextlib.redirect_stdout(io.StringIO()): res = eval_cmd(run=str(run_dir), batches=2, device='cpu')
    last = pd.read_csv(run_dir/'metrics.csv')['val_bpb'].dropna().iloc[-1]
    assert abs(res['bits_per_byte'] - last) < 1e-4

@pytest.mark.parametrize('row, msg', [
    (dict(choices=['a', 'b'], gold=0), "row 2: field 'prompt' is missing"),
    (dict(prompt='p', choices=[], gold=0), "row 2: field 'choices' must be a non-empty list"),
    (dict(prompt='p', choices=['a', ''], gold=0), "row 2: field 'choices' holds an empty"),
    (dict(prompt='p', choices=['a', 'b'], gold=2), "row 2: field 'gold'=2 must be an index into the 2 choices"),
    (dict(prompt='p', choices=['a', 'b']), "row 2: field 'gold'=None"),
    ('{"prompt": "p", ', "row 2: not valid JSON")])
def test_bad_task_files_name_file_row_and_field(tmp_path, row, msg):
    yml = write_task(tmp_path, [dict(prompt='ok', choices=['a', 'b'], gold=1), row])
    with pytest.raises(TaskError) as e: load_task(yml)
    assert str(tmp_path/'t.jsonl') in str(e.value) and msg in str(e.value)

def test_bad_task_spec(tmp_path):
    yml = write_task(tmp_path, [dict(prompt='x', target='y')], type='generate', template='{question}?')
    with pytest.raises(TaskError, match=r"row 1: field 'question' that the template uses is missing"): load_task(yml)
    (tmp_path/'u.yaml').write_text('type: multiple_choice\ndata: nowhere.jsonl\n')
    with pytest.raises(TaskError, match='nowhere.jsonl: no such data file'): load_task(tmp_path/'u.yaml')
    (tmp_path/'v.yaml').write_text('type: ranking\ndata: t.jsonl\n')
    with pytest.raises(TaskError, match=r"field 'type'='ranking' must be one of"): load_task(tmp_path/'v.yaml')

def test_long_prompts_are_truncated_from_the_left_and_counted(run_dir):
    "A prompt longer than the window: the context loses tokens on the left (lm-eval's rule) and the item is counted."
    model, tok, _ = load_run(run_dir)
    L = model.config.block_size
    long, short = 'the ' * 60, 'the'
    t = Task('long', 'multiple_choice', [dict(prompt=long, choices=['cat', 'dog'], gold=0), dict(prompt=short, choices=['cat', 'dog'], gold=1)])
    r = score_task(model, tok, t)
    assert r['truncated'] == 1 and r['n'] == 2
    c, k = encode_pair(tok, long, ' cat')
    row = (c + k)[-(L + 1):]
    lp = model(torch.tensor([row[:-1]]), torch.tensor([row[1:]]))[0][0].float().log_softmax(-1)
    assert r['lls'][0][0] == pytest.approx(sum(lp[len(row) - 1 - len(k) + j, t].item() for j, t in enumerate(k)), abs=1e-4)
    g = score_task(model, tok, Task('g', 'generate', [dict(prompt=long, target='x')], max_new_tokens=3))
    assert g['truncated'] == 1 and len(g['outputs'][0]) <= 3 * 4
