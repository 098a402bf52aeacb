"""Hugging Face checkpoints in and out (chapter 2b): every family exact against transformers, the hub cache offline,
`llmtrain export` / `init_from=` / `--model` from the shell, tokenizers against AutoTokenizer, and bad input."""
import json, os, shutil, subprocess, sys
from pathlib import Path
import pytest
import torch

transformers = pytest.importorskip('transformers')    # the reference: a test dependency (settings.ini dev_requirements)
from llmtrain.core import CheckpointError, ConfigError, DataError, load_config
from llmtrain.generation import generate_ids
from llmtrain.models import GPT, GPTConfig, LLAMA
from llmtrain.pretrained import load_pretrained, save_pretrained

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT.parent/'shared'/'seed'
transformers.logging.set_verbosity_error()

LLAMA_SHAPE = dict(vocab_size=101, hidden_size=48, intermediate_size=80, num_hidden_layers=3, num_attention_heads=6, max_position_embeddings=96)
FAMILIES = {
    'gpt2': lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=101, n_positions=96, n_embd=48, n_layer=3, n_head=6)),
    'llama2-mha': lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA_SHAPE, num_key_value_heads=6)),
    'llama3-gqa-scaled': lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA_SHAPE, num_key_value_heads=2,
        rope_theta=500000.0, rope_scaling=dict(rope_type='llama3', factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                               original_max_position_embeddings=24))),
    'llama-linear-rope-biases': lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA_SHAPE, num_key_value_heads=3,
        attention_bias=True, mlp_bias=True, rope_scaling=dict(rope_type='linear', factor=2.0))),
    'qwen2-tied': lambda: transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**LLAMA_SHAPE, num_key_value_heads=1, tie_word_embeddings=True)),
    'mistral': lambda: transformers.MistralForCausalLM(transformers.MistralConfig(**LLAMA_SHAPE, num_key_value_heads=2, sliding_window=None)),
}

def saved(kind, folder, dtype=torch.float32):
    torch.manual_seed(1)
    ref = FAMILIES[kind]().eval()
    with torch.no_grad():
        for p in ref.parameters(): p.uniform_(-0.35, 0.35)      # far from uniform logits: greedy tokens that differ
    ref.to(dtype).save_pretrained(folder)
    return ref

@pytest.mark.parametrize('kind', list(FAMILIES))
def test_family_exact(kind, tmp_path):
    "Same logits (fp32, <= 1e-5) on random batches and the same 32 greedy tokens, cached and not, as transformers."
    ref = saved(kind, tmp_path)
    model, tok = load_pretrained(tmp_path)
    assert tok is None and isinstance(model, GPT) and not model.training
    g = torch.Generator().manual_seed(2)
    for B, T in ((1, 96), (3, 17)):
        x = torch.randint(0, 101, (B, T), generator=g)
        with torch.no_grad(): err = (ref(x).logits - model(x, x)[0]).abs().max().item()
        assert err <= 1e-5, (kind, B, T, err)
    x = torch.randint(0, 101, (2, 6), generator=g)
    with torch.no_grad():
        want = ref.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=32, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert len(set(want[:, 6:].flatten().tolist())) > 1          # a continuation, not one token repeated
    for use_cache in (True, False):
        assert torch.equal(generate_ids(model, x, 32, temperature=0, use_cache=use_cache), want), (kind, use_cache)

def test_bf16_stays_bf16_and_round_trip_is_bitwise(tmp_path):
    saved('llama3-gqa-scaled', tmp_path/'a', torch.bfloat16)
    m, _ = load_pretrained(tmp_path/'a')
    assert {p.dtype for p in m.parameters()} == {torch.bfloat16}
    save_pretrained(m, None, tmp_path/'b')
    m2, _ = load_pretrained(tmp_path/'b')
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m2.state_dict().values()))
    from safetensors.torch import load_file
    a, b = load_file(tmp_path/'a'/'model.safetensors'), load_file(tmp_path/'b'/'model.safetensors')
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

def test_sharded_checkpoint(tmp_path):
    "save_pretrained with a small max_shard_size writes model-0000k-of-0000n.safetensors and an index; both load the same."
    ref = saved('qwen2-tied', tmp_path/'one')
    ref.save_pretrained(tmp_path/'sharded', max_shard_size='20KB')
    assert len(list((tmp_path/'sharded').glob('model-*-of-*.safetensors'))) > 2 and (tmp_path/'sharded'/'model.safetensors.index.json').is_file()
    a, b = load_pretrained(tmp_path/'one')[0].state_dict(), load_pretrained(tmp_path/'sharded')[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    idx = tmp_path/'sharded'/'model.safetensors.index.json'
    first = sorted((tmp_path/'sharded').glob('model-*.safetensors'))[0]
    first.unlink()
    with pytest.raises(CheckpointError, match='names shards that are not in'): load_pretrained(tmp_path/'sharded')
    assert idx.is_file()

HUB_CHILD = """
import sys, json
from llmtrain.pretrained import load_pretrained
from llmtrain.core import LLMTrainError
try:
    m, tok = load_pretrained(sys.argv[1], revision=None if sys.argv[2] == '-' else sys.argv[2])
    print(json.dumps(dict(ok=True, n_layer=m.config.n_layer, eos=tok.eos)))
except LLMTrainError as e: print(json.dumps(dict(ok=False, kind=type(e).__name__, msg=str(e))))
"""

def test_hub_id_offline_from_cache(tmp_path):
    "A hub id is found in a cache laid out as the hub lays it out; one that is not there fails naming HF_HUB_OFFLINE, the cache and a local folder."
    rev = 'a' * 40
    snap = tmp_path/'hub'/'models--org--tiny-llama'/'snapshots'/rev
    saved('llama2-mha', snap)
    tk = Path(transformers.__file__)                              # any tokenizer.json will do: make one with tokenizers
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    t = Tokenizer(models.BPE()); t.pre_tokenizer = pre_tokenizers.ByteLevel()
    t.train_from_iterator(['hello world ' * 50], trainers.BpeTrainer(vocab_size=90, special_tokens=['</s>']))
    t.save(str(snap/'tokenizer.json')); (snap/'tokenizer_config.json').write_text(json.dumps(dict(eos_token='</s>')))
    (tmp_path/'hub'/'models--org--tiny-llama'/'refs').mkdir()
    (tmp_path/'hub'/'models--org--tiny-llama'/'refs'/'main').write_text(rev)
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_HUB_CACHE=str(tmp_path/'hub'), PYTHONPATH=str(ROOT))
    run = lambda *a: json.loads(subprocess.run([sys.executable, '-c', HUB_CHILD, *a], env=env, capture_output=True, text=True,
                                               timeout=300).stdout.strip().splitlines()[-1])
    assert run('org/tiny-llama', '-') == dict(ok=True, n_layer=3, eos='</s>')
    assert run('org/tiny-llama', rev)['ok']
    r = run('org/not-here', '-')
    assert not r['ok'] and r['kind'] == 'CheckpointError'
    assert 'HF_HUB_OFFLINE' in r['msg'] and str(tmp_path/'hub') in r['msg'] and 'local folder' in r['msg']
    r = run('./no/such/folder', '-')
    assert not r['ok'] and 'No folder' in r['msg']

def cli(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, '-m', 'llmtrain.cli', *args], capture_output=True, text=True, timeout=600, env=env, cwd=cwd)

def test_export_init_from_and_model_flag_from_the_shell(tmp_path):
    "llmtrain export -> transformers (logits, greedy text, corpus encodings); train init_from=; generate/eval --model."
    corpus = tmp_path/'corpus.txt'
    corpus.write_text((ROOT/'README.md').read_text(encoding='utf-8')[:30000], encoding='utf-8')
    common = [f'out_dir={tmp_path/"runs"}', 'progress=false', 'sample_tokens=0', 'device=cpu', 'batch_size=4', 'block_size=32',
              'n_layer=1', 'n_head=2', 'n_embd=32', 'eval_iters=2', 'max_iters=4', 'eval_interval=4', 'warmup_iters=1']
    r = cli('train', *common, 'name=w', f'corpus={corpus}', 'tokenizer=word', 'vocab_size=600', 'pos_emb=rope', 'norm=rmsnorm', 'mlp=swiglu')
    assert r.returncode == 0, r.stderr[-2000:]
    r = cli('export', '--run', str(tmp_path/'runs'/'w'), '--to', str(tmp_path/'hf'))
    assert r.returncode == 0, r.stderr[-2000:]
    assert {p.name for p in (tmp_path/'hf').iterdir()} == {'config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'generation_config.json'}
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path/'hf').eval()
    hft = transformers.AutoTokenizer.from_pretrained(tmp_path/'hf')
    assert type(hf).__name__ == 'LlamaForCausalLM'
    from llmtrain.training import load_run
    ours, tok, _ = load_run(tmp_path/'runs'/'w')
    text = corpus.read_text(encoding='utf-8')
    assert hft(text)['input_ids'] == tok.encode(text)
    x = torch.tensor([tok.encode(text[:400])[:32]])
    with torch.no_grad(): assert (hf(x).logits - ours(x, x)[0]).abs().max().item() <= 1e-5
    enc = hft(' the', return_tensors='pt')
    with torch.no_grad(): out = hf.generate(**enc, max_new_tokens=12, do_sample=False)
    r = cli('generate', '--model', str(tmp_path/'hf'), '--prompt', ' the', '--n', '12', '--temperature', '0', '--device', 'cpu')
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout[:-1] == ' the' + hft.decode(out[0, enc['input_ids'].size(1):])   # the prompt, then the same greedy text
    r = cli('eval', '--model', str(tmp_path/'hf'), '--corpus', str(corpus), '--batches', '2', '--device', 'cpu', '--block_size', '16')
    assert r.returncode == 0 and 'perplexity' in r.stdout, r.stderr[-2000:]
    r = cli('train', *common, 'name=more', f'corpus={corpus}', f'init_from={tmp_path/"hf"}')
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = load_config(tmp_path/'runs'/'more'/'config.yaml')
    assert cfg.init_from == str(tmp_path/'hf')
    r = cli('eval', '--run', str(tmp_path/'runs'/'more'), '--batches', '2', '--device', 'cpu')
    assert r.returncode == 0 and 'perplexity' in r.stdout, r.stderr[-2000:]
    r = cli('train', *common, 'name=long', f'corpus={corpus}', f'init_from={tmp_path/"hf"}', 'block_size=64')
    assert r.returncode == 2 and 'block_size=64 is longer than the context' in r.stderr
    r = cli('train', *common, 'name=mix', f'corpus={corpus}', 'pos_emb=rope')          # a block no transformers class has
    assert r.returncode == 0, r.stderr[-2000:]
    r = cli('export', '--run', str(tmp_path/'runs'/'mix'), '--to', str(tmp_path/'refused'))
    assert r.returncode == 2 and "pos_emb='rope'" in r.stderr and 'pos_emb=learned norm=layernorm mlp=gelu' in r.stderr
    assert not (tmp_path/'refused').exists()

def test_unigram_tokenizer_equals_autotokenizer(tmp_path):
    "Any tokenizers model works, here a Unigram with a Metaspace pre-tokenizer (T5/XLNet style), on English, code, Chinese and emoji."
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
    from llmtrain.preprocessing import load_tokenizer
    zh = ''.join(p.read_text(encoding='utf-8') for p in sorted(SEED.glob('*.txt'))) if SEED.is_dir() else '训练大模型需要数据。' * 100
    texts = [zh[:3000], (ROOT/'README.md').read_text(encoding='utf-8')[:3000], Path(json.__file__).read_text()[:3000],
             'emoji: 🙂👍🏽 🇯🇵 👩‍💻 — ok']
    t = Tokenizer(models.Unigram()); t.pre_tokenizer = pre_tokenizers.Metaspace(); t.decoder = decoders.Metaspace()
    t.train_from_iterator(texts * 3, trainers.UnigramTrainer(vocab_size=500, special_tokens=['<pad>', '</s>', '<unk>'], unk_token='<unk>'))
    t.save(str(tmp_path/'tokenizer.json'))
    (tmp_path/'tokenizer_config.json').write_text(json.dumps(dict(tokenizer_class='PreTrainedTokenizerFast', eos_token='</s>', pad_token='<pad>', unk_token='<unk>')))
    ours, theirs = load_tokenizer(tmp_path/'tokenizer.json'), transformers.AutoTokenizer.from_pretrained(tmp_path)
    for s in texts:
        assert ours.encode(s) == theirs(s, add_special_tokens=False)['input_ids']
    assert (ours.eos_id, ours.pad_id) == (theirs.eos_token_id, theirs.pad_token_id)

def test_bad_input(tmp_path):
    saved('llama2-mha', tmp_path/'ok')
    with pytest.raises(CheckpointError, match='holds no weights'):
        shutil.copytree(tmp_path/'ok', tmp_path/'noweights'); (tmp_path/'noweights'/'model.safetensors').unlink(); load_pretrained(tmp_path/'noweights')
    with pytest.raises(CheckpointError, match='is a file'): load_pretrained(tmp_path/'ok'/'config.json')
    cfg = json.loads((tmp_path/'ok'/'config.json').read_text())
    shutil.copytree(tmp_path/'ok', tmp_path/'odd')
    (tmp_path/'odd'/'config.json').write_text(json.dumps(dict(cfg, num_hidden_layers=4, intermediate_size=64)))
    with pytest.raises(CheckpointError) as e: load_pretrained(tmp_path/'odd')
    assert 'model.layers.3.mlp.up_proj.weight' in str(e.value) and 'model.layers.0.mlp.up_proj.weight: (80, 48) in the file, (64, 48) expected' in str(e.value)
    m, _ = load_pretrained(tmp_path/'ok')
    from llmtrain.preprocessing import train_tokenizer
    big = train_tokenizer('char', ''.join(chr(0x4e00 + i) for i in range(300)))
    with pytest.raises(DataError, match="300 tokens but the model's embedding only 101 rows"): save_pretrained(m, big, tmp_path/'nope')
    assert not (tmp_path/'nope').exists()
    with pytest.raises(ConfigError, match="init_from='x' loads a GPT; model='lstm'"):
        from llmtrain.pretrained import init_from_pretrained
        init_from_pretrained(load_config(overrides=['init_from=x', 'model=lstm']))
