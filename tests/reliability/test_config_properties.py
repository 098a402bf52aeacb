"""Property-based tests (hypothesis) of config parsing: any `key=value` overrides or YAML mapping gives either a valid
`TrainConfig` or a `ConfigError` (never another exception), and a config that validates can be trained: its numbers are
finite and its learning-rate schedule is defined at every iteration."""
import math
from dataclasses import fields, asdict
import yaml
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck
from llmtrain.core import TrainConfig, ConfigError, parse_overrides, load_config
from llmtrain.training import lr_at

NAMES = [f.name for f in fields(TrainConfig)]
FLOATS = [f.name for f in fields(TrainConfig) if isinstance(getattr(TrainConfig(), f.name), float)]
keys = st.one_of(st.sampled_from(NAMES), st.text(min_size=0, max_size=12),
                 st.sampled_from(NAMES).map(lambda k: k.replace('_', '-')), st.sampled_from(NAMES).map(lambda k: '--' + k))
texts = st.one_of(st.text(max_size=20), st.integers(-10**6, 10**6).map(str), st.floats(allow_nan=True).map(repr),
                  st.sampled_from(['true', 'false', 'None', 'null', '', '[1, 2]', '{a: 1}', '!!python/object:os.system',
                                   '.inf', '-.inf', '.nan', '1e-3', '1e3', '0x10', '~', "'quoted'", 'rope', 'lstm', 'gpt']))
values = st.one_of(texts, st.none(), st.booleans(), st.integers(-10**9, 10**9), st.floats(allow_nan=True),
                   st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))

def check(cfg: TrainConfig):
    "What every config that validates must satisfy before a run starts."
    for k in FLOATS: assert math.isfinite(getattr(cfg, k)), f"{k}={getattr(cfg, k)} validated but is not finite"
    for it in (0, cfg.warmup_iters, cfg.max_iters // 2, cfg.max_iters - 1):
        lr = lr_at(it, cfg)                       # raises ConfigError after work started if the schedule is undefined
        assert math.isfinite(lr) and 0 <= lr <= cfg.lr * (1 + 1e-9), (it, lr)

def build(f):
    "Run `f`; a ConfigError is an answer, any other exception is a bug; a config must also pass `check`."
    try: cfg = f()
    except ConfigError as e:
        assert str(e); return None
    try: check(cfg)
    except ConfigError as e: raise AssertionError(f"validated, then failed when used: {e}") from None
    return cfg

@SETTINGS
@given(st.lists(st.tuples(keys, texts), max_size=6))
def test_overrides_give_a_config_or_a_config_error(pairs):
    build(lambda: load_config(None, [f"{k}={v}" for k, v in pairs]))

@SETTINGS
@given(st.lists(st.one_of(texts, st.tuples(keys, texts).map('='.join)), max_size=4))
def test_parse_overrides_never_raises_anything_else(items):
    try: d = parse_overrides(items)
    except ConfigError: return
    assert set(d) <= set(NAMES)

@SETTINGS
@given(st.dictionaries(keys, values, max_size=6))
def test_yaml_files_give_a_config_or_a_config_error(tmp_path_factory, d):
    p = tmp_path_factory.mktemp('cfg')/'c.yaml'
    p.write_text(yaml.safe_dump(d))
    build(lambda: load_config(p))

@SETTINGS
@given(st.text(max_size=200))
def test_any_yaml_text_gives_a_config_or_a_config_error(tmp_path_factory, text):
    p = tmp_path_factory.mktemp('cfg')/'c.yaml'
    p.write_text(text)
    build(lambda: load_config(p))

NONE_WORDS = ('none', 'null', '')     # an Optional[str] given as one of these reads back as None, by design

@SETTINGS
@given(name=st.one_of(st.none(), st.text(max_size=30).filter(lambda x: x.strip().lower() not in NONE_WORDS)),
       corpus=st.text(min_size=1, max_size=30), lr=st.floats(1e-12, 10), dropout=st.floats(0, 0.99),
       vocab=st.one_of(st.none(), st.integers(1, 10**6)), bias=st.booleans())
def test_a_saved_config_loads_back_equal(tmp_path_factory, name, corpus, lr, dropout, vocab, bias):
    "Round trip: save_config then load_config gives the same config (a run folder's config.yaml drives --resume)."
    from llmtrain.core import save_config
    cfg = TrainConfig(name=name, corpus=corpus, lr=lr, min_lr=lr / 10, dropout=dropout, vocab_size=vocab, bias=bias)
    p = tmp_path_factory.mktemp('cfg')/'config.yaml'
    save_config(cfg, p)
    assert asdict(load_config(p)) == asdict(cfg)
