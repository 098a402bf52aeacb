import pytest, yaml
from pathlib import Path
from llmtrain.core import load_config, TrainConfig, ConfigError, LLMTrainError

CONFIGS = sorted((Path(__file__).resolve().parents[1]/'configs').glob('*.yaml'))

@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert isinstance(cfg, TrainConfig)

def test_shakespeare_recipe_is_nanogpts_cpu_shape():
    c = load_config(Path(__file__).resolve().parents[1]/'configs'/'shakespeare-char-cpu.yaml')
    assert (c.n_layer, c.n_head, c.n_embd, c.block_size, c.batch_size, c.max_iters) == (4, 4, 128, 64, 12, 2000)
    assert (c.lr, c.min_lr, c.lr_decay_iters, c.dropout, c.beta1, c.beta2) == (1e-3, 1e-4, 2000, 0.0, 0.9, 0.99)
    assert c.warmup_iters > 0 and c.eval_iters >= 200

@pytest.mark.parametrize('override, message', [
    ('n_layers=2', "Did you mean 'n_layer'"), ('lr=-1', 'lr=-1'), ('block_size=0', 'block_size'),
    ('dropout=1.5', 'dropout'), ('n_layer=2.5', 'not a valid int'), ('compile=yes please', 'not a valid bool'),
    ('novalue', 'key=value'), ('precision=fp8', 'precision'),
])
def test_bad_overrides_are_named(override, message):
    with pytest.raises(ConfigError, match=None) as e: load_config(overrides=[override])
    assert message in str(e.value)
    assert isinstance(e.value, LLMTrainError)

def test_file_then_overrides(tmp_path):
    p = tmp_path/'c.yaml'; p.write_text(yaml.safe_dump({'n_layer': 3, 'lr': 0.01, 'min_lr': 0.001}))
    c = load_config(p, ['lr=0.002'])
    assert (c.n_layer, c.lr) == (3, 0.002)

def test_unknown_key_in_file(tmp_path):
    p = tmp_path/'c.yaml'; p.write_text('learning_rate: 0.1\n')
    with pytest.raises(ConfigError, match='Unknown config key'): load_config(p)

def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match='does not exist'): load_config(tmp_path/'nope.yaml')

def test_config_choices_match_the_library():
    from llmtrain.core import _CHOICES
    from llmtrain.optim import SCHEDULES, OPTIMIZERS
    assert _CHOICES['schedule'] == SCHEDULES and _CHOICES['optimizer'] == OPTIMIZERS

@pytest.mark.parametrize('opt', ['sgd', 'momentum', 'adamw-scratch'])
def test_trainer_takes_optimizer_and_schedule_by_name(opt):
    from llmtrain.core import TrainConfig
    from llmtrain.data import encode_corpus, RandomWindows
    from llmtrain.models import create_model
    from llmtrain.training import Trainer
    d = encode_corpus('hello world, ' * 200)
    cfg = TrainConfig(optimizer=opt, schedule='wsd', lr=0.05, min_lr=0.0, n_layer=1, n_head=1, n_embd=16, block_size=8,
                      batch_size=4, max_iters=30, warmup_iters=2, eval_iters=1, progress=False, device='cpu', precision='fp32')
    t = Trainer(create_model(cfg, d.tokenizer.vocab_size), RandomWindows(d.train, 8, 4), [], cfg)
    losses = [t.train_step().item() for _ in range(30)]
    assert losses[-1] < losses[0] - 0.5, losses
    assert type(t.opt).__name__ != 'AdamW' or opt == 'adamw-scratch'
