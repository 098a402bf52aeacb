"""LoRA through the command line: a LoRA run trained from scratch, exported merged and as PEFT adapters (with its base written next to them)."""
import json, subprocess, sys
import pytest, torch

SMALL = ['n_layer=2', 'n_head=2', 'n_embd=32', 'block_size=32', 'batch_size=4', 'eval_iters=2', 'eval_interval=10', 'max_iters=10',
         'sample_tokens=0', 'progress=false', 'warmup_iters=2', 'precision=fp32', 'device=cpu', 'lr=1e-2',
         'lora_rank=4', 'lora_alpha=8', 'lora_targets=all', 'pos_emb=rope', 'norm=rmsnorm', 'mlp=swiglu']

def run_cli(*args):
    return subprocess.run([sys.executable, '-m', 'llmtrain.cli', *args], capture_output=True, text=True, timeout=600)

def test_lora_run_exports_merged_and_as_peft_adapters(tmp_path):
    transformers, peft = pytest.importorskip('transformers'), pytest.importorskip('peft')
    from llmtrain.training import load_run
    from llmtrain.lora import lora_modules, lora_state_dict
    r = run_cli('train', *SMALL, f'out_dir={tmp_path}', 'name=r')
    assert r.returncode == 0, r.stderr
    model, tok, cfg = load_run(tmp_path/'r')
    assert cfg.lora_rank == 4 and len(lora_modules(model)) == 8          # 4 Linear layers in each of 2 blocks
    assert any(v.abs().sum() > 0 for k, v in lora_state_dict(model).items() if k.endswith('lora_B'))   # the adapters trained
    x = torch.tensor([tok.encode('The "for" statement')])
    with torch.no_grad(): ours = model(x, x)[0]
    for extra, name in (([], 'merged'), (['--adapters'], 'adapters')):
        e = run_cli('export', '--run', str(tmp_path/'r'), '--to', str(tmp_path/name), *extra)
        assert e.returncode == 0, e.stderr
    with torch.no_grad():
        merged = transformers.AutoModelForCausalLM.from_pretrained(tmp_path/'merged')(x).logits
        base_dir = json.loads((tmp_path/'adapters'/'adapter_config.json').read_text())['base_model_name_or_path']
        assert base_dir == str((tmp_path/'adapters'/'base').resolve())
        hf = transformers.AutoModelForCausalLM.from_pretrained(base_dir)
        adapted = peft.PeftModel.from_pretrained(hf, tmp_path/'adapters').eval()(x).logits
    assert (merged - ours).abs().max() < 1e-5 and (adapted - ours).abs().max() < 1e-5
