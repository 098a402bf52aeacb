"""Fine-tuning (chapter 6b) end to end through the `llmtrain` command: a tiny base run, `llmtrain finetune` on a JSONL
file and on a built-in set, the run folder with `generate`/`export`/`load_run` (transformers opens the export), exact
resume, bad rows, RNNs and packing, and the token-weighted loss: 1 process x 4 accumulation steps = 2 processes x 2
steps (torchrun, gloo) = one big batch, and exact resume under torchrun; a transformers model end to end
(--model DIR), the memory planner first, and `llmtrain eval --sft`."""
import json, os, subprocess, sys
from pathlib import Path
import pandas as pd
import pytest
import torch
from llmtrain.cli import main

TINY = ['n_layer=2', 'n_head=2', 'n_embd=32', 'block_size=48', 'max_iters=4', 'eval_interval=4', 'eval_iters=2', 'batch_size=4',
        'progress=false', 'sample_tokens=0', 'precision=fp32', 'device=cpu', 'corpus=pydoc', 'warmup_iters=1', 'log_interval=1']
FT = ['max_iters=6', 'eval_interval=3', 'sft_items=300', 'sft_eval_items=16', 'log_interval=1', 'lr_decay_iters=6', 'warmup_iters=1']

@pytest.fixture(scope='module')
def base(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('base')
    main(['train', *TINY, f'out_dir={tmp}', 'name=base'])
    return tmp/'base'

def write_jsonl(path, rows):
    path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
    return path

def rows(n=400):
    out = [{'messages': [{'role': 'user', 'content': 'x' * (60 + i)}, {'role': 'assistant', 'content': 'long answer ' * 5}]} for i in range(40)]
    for i in range(n):
        a, b = i % 37, i % 11
        out.append({'prompt': f'{a}+{b}', 'completion': str(a + b)} if i % 2 else
                   {'messages': [{'role': 'system', 'content': 'add'}, {'role': 'user', 'content': f'{a}+{b}'}, {'role': 'assistant', 'content': str(a + b)}]})
    return out

def losses(rd):
    df = pd.read_csv(rd/'metrics.csv')
    return df.dropna(subset=['train_loss'])['train_loss'].tolist()

def test_finetune_a_jsonl_file_and_use_the_run_folder(base, tmp_path, capsys):
    from llmtrain.training import load_run
    from llmtrain.cli import generate_cmd, export_cmd
    data = write_jsonl(tmp_path/'sums.jsonl', rows())
    main(['finetune', '--run', str(base), f'data={data}', *FT, f'out_dir={tmp_path}', 'name=ft'])
    out = capsys.readouterr().out
    rd = tmp_path/'ft'
    for f in ('config.yaml', 'tokenizer.json', 'model.safetensors', 'ckpt.pt', 'metrics.csv', 'sft_data.json', 'sft_eval.json'):
        assert (rd/f).is_file(), f
    ev, st = json.loads((rd/'sft_eval.json').read_text()), json.loads((rd/'sft_data.json').read_text())
    assert 'exact match on' in out and 'truncated' in out
    assert 0 <= ev['exact_match'] <= 1 and ev['n'] > 0 and ev['val_loss'] > 0
    assert st['train']['truncated'] > 0 and st['train']['padding'] * 3 < st['train']['padding_unpacked']   # over-long rows counted
    m, tok, cfg = load_run(rd)
    bm, btok, _ = load_run(base)
    assert tok.vocab_size == btok.vocab_size + 4 and '<|assistant|>' in tok.special_tokens and cfg.init_run == str(base)
    assert m.config.vocab_size == tok.vocab_size
    text = generate_cmd(run=str(rd), prompt='<|user|>3+4<|end|><|assistant|>', n=5, temperature=0, device='cpu')
    assert text.startswith('<|user|>3+4')
    from llmtrain.serve import load_chat_model, ChatSession
    cm, ctok, _ = load_chat_model(str(rd))                 # what llmtrain chat and serve open
    reply = ''.join(ChatSession(cm, ctok, temperature=0, max_tokens=6).reply('3+4'))
    assert isinstance(reply, str) and '<|end|>' not in reply
    hf = export_cmd(run=str(rd), to=str(tmp_path/'hf'))
    from transformers import AutoModelForCausalLM
    hm = AutoModelForCausalLM.from_pretrained(hf).eval()
    ids = torch.tensor([tok.encode('<|user|>12+5<|end|><|assistant|>')])
    with torch.no_grad(): ours, theirs = m(ids, ids)[0], hm(ids).logits
    assert (ours - theirs).abs().max() < 1e-4

def test_resume_gives_the_same_losses(base, tmp_path):
    common = ['--run', str(base), 'data=addition', *FT, f'out_dir={tmp_path}']
    main(['finetune', *common, 'name=a'])
    main(['finetune', *common, 'name=b', 'max_iters=3'])
    main(['finetune', '--resume', str(tmp_path/'b'), 'max_iters=6'])
    a, b = losses(tmp_path/'a'), losses(tmp_path/'b')
    assert len(a) == len(b) == 6 and max(abs(x - y) for x, y in zip(a, b)) < 1e-6, (a, b)

def test_a_bad_row_names_file_and_row(base, tmp_path, capsys):
    r = rows(10)[40:]
    r[2] = {'messages': [{'role': 'bot', 'content': 'hi'}, {'role': 'assistant', 'content': 'x'}]}
    data = write_jsonl(tmp_path/'bad.jsonl', r)
    with pytest.raises(SystemExit) as e: main(['finetune', '--run', str(base), f'data={data}', *FT, f'out_dir={tmp_path}'])
    err = capsys.readouterr().err
    assert e.value.code == 2 and 'bad.jsonl row 3' in err and "role 'bot'" in err
    r[2] = {'messages': [{'role': 'user', 'content': 'hi'}]}
    write_jsonl(data, r)
    with pytest.raises(SystemExit): main(['finetune', '--run', str(base), f'data={data}', *FT, f'out_dir={tmp_path}'])
    assert 'row 3: the conversation has no assistant turn' in capsys.readouterr().err
    with pytest.raises(SystemExit): main(['train', *TINY, f'out_dir={tmp_path}', 'data=addition'])   # not silently language modelling
    assert 'llmtrain finetune' in capsys.readouterr().err

def test_recurrent_models_refuse_packing(tmp_path, capsys):
    main(['train', *TINY, 'model=lstm', f'out_dir={tmp_path}', 'name=rnn'])
    common = ['finetune', '--run', str(tmp_path/'rnn'), 'data=addition', *FT, f'out_dir={tmp_path}']
    with pytest.raises(SystemExit): main(common)
    assert 'pack=false' in capsys.readouterr().err
    main([*common, 'pack=false', 'name=rnn-ft'])
    assert json.loads((tmp_path/'rnn-ft'/'sft_data.json').read_text())['train']['padding'] == \
           json.loads((tmp_path/'rnn-ft'/'sft_data.json').read_text())['train']['padding_unpacked']

def launch(nproc, base, tmp, *args):
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    cmd = ([sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}'] if nproc > 1 else [sys.executable])
    cmd += ['-m', 'llmtrain.cli', 'finetune', f'init_run={base}', 'data=addition', 'max_iters=3', 'eval_interval=3', 'sft_items=400',
            'sft_eval_items=16', 'log_interval=1', 'lr_decay_iters=3', 'warmup_iters=1', f'out_dir={tmp}', *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]

def test_accumulation_and_processes_equal_one_big_batch(base, tmp_path):
    from safetensors.torch import load_file
    launch(1, base, tmp_path, 'batch_size=16', 'grad_accum=1', 'name=big')
    launch(1, base, tmp_path, 'batch_size=4', 'grad_accum=4', 'name=acc')
    launch(2, base, tmp_path, 'batch_size=4', 'grad_accum=2', 'name=ddp')
    ref = losses(tmp_path/'big')
    w = load_file(str(tmp_path/'big'/'model.safetensors'))
    for name in ('acc', 'ddp'):
        ls = losses(tmp_path/name)
        assert len(ls) == 3 and max(abs(x - y) for x, y in zip(ref, ls)) < 1e-6, (name, ref, ls)
        w2 = load_file(str(tmp_path/name/'model.safetensors'))
        assert max((w[k] - w2[k]).abs().max().item() for k in w) < 1e-6, name
    # and resuming under torchrun is exact: 2 processes, 2 iterations, then --resume to 3, equal 'ddp' (3 in one go)
    launch(2, base, tmp_path, 'batch_size=4', 'grad_accum=2', 'name=cut', 'max_iters=2', 'eval_interval=2')
    launch(2, base, tmp_path, '--resume', str(tmp_path/'cut'), 'batch_size=4', 'grad_accum=2', 'name=cut')
    ls = losses(tmp_path/'cut')
    assert len(ls) == 3 and max(abs(x - y) for x, y in zip(ref, ls)) < 1e-6, ('resume', ref, ls)
    w2 = load_file(str(tmp_path/'cut'/'model.safetensors'))
    assert max((w[k] - w2[k]).abs().max().item() for k in w) < 1e-6, 'resume'

LLAMA3_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
                   "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
                   "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")

def sum_convs(n=300):
    return [[{'role': 'system', 'content': 'You add numbers.'}, {'role': 'user', 'content': f'What is {i % 23} plus {i % 7}?'},
             {'role': 'assistant', 'content': f'It is {i % 23 + i % 7}.'}] for i in range(n)]

def tiny_hf_chat_model(folder):
    "A random Llama with a byte-level BPE tokenizer and a Llama-3 style chat template, saved as transformers saves it."
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
    special = ['<|begin_of_text|>', '<|start_header_id|>', '<|end_header_id|>', '<|eot_id|>']
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer, tk.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    text = [m['content'] for c in sum_convs() for m in c] + ['system user assistant\n\n']
    tk.train_from_iterator(text, trainers.BpeTrainer(vocab_size=300, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf_tok = transformers.PreTrainedTokenizerFast(tokenizer_object=tk, bos_token='<|begin_of_text|>', eos_token='<|eot_id|>',
                                                  chat_template=LLAMA3_TEMPLATE)
    torch.manual_seed(0)
    m = transformers.LlamaForCausalLM(transformers.LlamaConfig(vocab_size=tk.get_vocab_size(), hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        bos_token_id=tk.token_to_id('<|begin_of_text|>'), eos_token_id=tk.token_to_id('<|eot_id|>')))
    m.save_pretrained(folder); hf_tok.save_pretrained(folder)
    return hf_tok

def test_finetune_a_transformers_model_end_to_end(tmp_path, capsys):
    "--model DIR: the Jinja template's mask trains the reply and its <|eot_id|> only, its ids are apply_chat_template's; the run exports and transformers opens it with equal logits and the same template; chat works."
    import transformers
    from llmtrain.training import load_run
    from llmtrain.finetune import template_for
    from llmtrain.templates import JinjaTemplate
    from llmtrain.cli import export_cmd
    hf_tok = tiny_hf_chat_model(tmp_path/'llama')
    data = write_jsonl(tmp_path/'sums.jsonl', [{'messages': c} for c in sum_convs()])
    main(['finetune', '--model', str(tmp_path/'llama'), f'data={data}', *FT, 'block_size=64', 'batch_size=4', 'eval_iters=2',
          'progress=false', 'sample_tokens=0', 'precision=fp32', 'device=cpu', f'out_dir={tmp_path}', 'name=ft'])
    rd = tmp_path/'ft'
    m, tok, cfg = load_run(rd)
    t = template_for(cfg, tok)
    assert isinstance(t, JinjaTemplate)
    for conv in sum_convs(5) + [sum_convs(2)[0] + [{'role': 'user', 'content': 'And 2 plus 2?'}, {'role': 'assistant', 'content': 'It is 4.'}]]:
        ids, mask = t.encode(conv)
        assert ids == list(hf_tok.apply_chat_template(conv, tokenize=True, return_dict=False))
        trained = [i for i, k in zip(ids, mask) if k]
        want = ''.join(mm['content'] + '<|eot_id|>' for mm in conv if mm['role'] == 'assistant')
        assert hf_tok.decode(trained) == want and trained[-1] == hf_tok.eos_token_id
    ev = json.loads((rd/'sft_eval.json').read_text())
    assert ev['n'] > 0 and ev['val_loss'] > 0
    hf = export_cmd(run=str(rd), to=str(tmp_path/'hf'))
    hm = transformers.AutoModelForCausalLM.from_pretrained(hf).eval()
    tok2 = transformers.AutoTokenizer.from_pretrained(hf)
    conv = sum_convs(3)[2]
    ids = tok2.apply_chat_template(conv[:-1], tokenize=True, add_generation_prompt=True, return_dict=False)
    assert ids == t.encode(conv[:-1], add_generation_prompt=True)[0]        # the template travels with the export
    x = torch.tensor([ids])
    with torch.no_grad(): ours, theirs = m(x, x)[0], hm(x).logits
    assert (ours - theirs).abs().max() < 1e-4
    from llmtrain.serve import load_chat_model, ChatSession
    cm, ctok, _ = load_chat_model(str(rd))
    s = ChatSession(cm, ctok, temperature=0, max_tokens=6)
    assert isinstance(s.template, JinjaTemplate)
    reply = ''.join(s.reply('What is 3 plus 4?'))
    assert isinstance(reply, str) and '<|eot_id|>' not in reply

def test_an_oversized_finetune_stops_before_the_base_is_loaded(base, tmp_path, monkeypatch, capsys):
    "The memory planner (chapter 5) runs first, for a run folder and for a Hugging Face folder: ResourceError, nothing loaded."
    from llmtrain import finetune as ft
    from llmtrain.resources import ResourceError
    tiny_hf_chat_model(tmp_path/'llama')
    def forbidden(*a, **k): raise AssertionError('the base was loaded before the memory check')
    monkeypatch.setattr(ft, 'load_base', forbidden)
    for src in (dict(run=str(base)), dict(model=str(tmp_path/'llama'))):
        cfg = ft.finetune_config(**src, overrides=['data=addition', 'batch_size=100000000', 'device=cpu', f'out_dir={tmp_path}'])
        with pytest.raises(ResourceError, match='largest micro-batch'): ft.finetune(cfg)
    monkeypatch.setenv('LLMTRAIN_MEMORY_LIMIT', '1MB')                 # from the shell: the error, exit code 2
    with pytest.raises(SystemExit) as e: main(['finetune', '--run', str(base), 'data=addition', 'device=cpu', f'out_dir={tmp_path}'])
    assert e.value.code == 2 and 'does not fit in memory' in capsys.readouterr().err
    monkeypatch.delenv('LLMTRAIN_MEMORY_LIMIT')
    cfg, plan = ft.check_sft_memory(ft.finetune_config(run=str(base), overrides=['data=addition', 'batch_size=auto',
                                    'tokens_per_step=192', 'device=cpu']), 'cpu')            # auto: 192 tokens = 4 rows of 48
    assert plan['fits'] and cfg.batch_size * cfg.grad_accum == 4

def test_eval_sft_scores_a_users_file(base, tmp_path, capsys):
    "`llmtrain eval --sft FILE`: exact match over every row (half the targets are the model's own greedy replies: 50%), the masked loss as a per-token mean computed by hand; built-in sets give their test split."
    import torch.nn.functional as F
    from llmtrain.training import load_run
    from llmtrain.finetune import generate_replies, template_for, evaluate_sft
    m, tok, cfg = load_run(base)
    t = template_for(cfg, tok)
    convs = [[{'role': 'user', 'content': f'{i}+{i + 1}'}, {'role': 'assistant', 'content': str(2 * i + 1)}] for i in range(10)]
    replies = generate_replies(m, t, convs, 6)
    rows = [{'messages': c[:-1] + [{'role': 'assistant', 'content': r if k % 2 else r + 'x'}]} for k, (c, r) in enumerate(zip(convs, replies))]
    data = write_jsonl(tmp_path/'held_out.jsonl', rows)
    main(['eval', '--run', str(base), '--sft', str(data)])
    assert 'exact match on 10 conversations' in capsys.readouterr().out
    res = json.loads((base/'eval.json').read_text())
    assert res == json.loads(json.dumps({'run': str(base)} | evaluate_sft(m, tok, str(data), cfg))), res
    assert res['n'] == 10 and evaluate_sft(m, tok, str(data), cfg, max_new_tokens=6)['exact_match'] == 0.5
    tot = n = 0
    with torch.no_grad():
        for r in rows:
            ids, mask = t.encode(r['messages'])
            x = torch.tensor([ids[:-1]]); logits = m(x, x)[0][0]
            keep = torch.tensor(mask[1:]).bool()
            tot += F.cross_entropy(logits[keep], torch.tensor(ids[1:])[keep], reduction='sum').item(); n += int(keep.sum())
    assert abs(res['val_loss'] - tot / n) < 1e-4, (res['val_loss'], tot / n)
    r2 = evaluate_sft(m, tok, 'addition', cfg, limit=12)
    assert r2['n'] == 12 and 0 <= r2['exact_match'] <= 1
    from llmtrain.core import DataError
    with pytest.raises(DataError, match='mixes files and built-in sets'):   # not an endless scan of the generated set
        evaluate_sft(m, tok, f'addition,{data}', cfg)
