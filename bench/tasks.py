"""Multiple-choice scoring on this CPU: batched with shared prefixes (`llmtrain.tasks.loglikelihoods`: the prompts of many
items in one padded pass through the model's cache, each once, then all their choices in batched passes: a GPT's short
choices in one row per item, a tree after its cached prompt) against the
one-item-at-a-time loop (one forward pass per choice), on the same items, in the same run; items per second, the best of --repeats.

    OMP_NUM_THREADS=1 python bench/tasks.py           # a 4-layer, 128-wide GPT and a 2-layer LSTM, char and BPE, 40 items per task
    python bench/tasks.py --smoke                     # tiny models and vocabularies, 4 items, one round: checks the script, not the machine

The models have random weights (the speed of scoring does not depend on them) and a character tokenizer or a
4,096-token byte-level BPE trained on tinyshakespeare + Python's documentation. The gain grows with the number of
choices, the prompt's share of the text and the vocabulary (the output head runs on the choices' tokens only):
shakespeare_speaker (a speech, then 8 short names; also 3-shot, the usual setting of multiple-choice suites) gains most,
the zero-shot pydoc_cloze (a sentence, then 4 sentences) least: there the loop computes only about 1.6x the tokens of the
shared way, which bounds a transformer's gain. An item longer than the 512-token window (`trunc`) is truncated pair by
pair as lm-eval does; choices whose truncated contexts differ are scored one row each. Both ways give the same
log-likelihoods (max_ll_diff). `tokens` is the ratio of the tokens the loop computes to those the shared way must
compute (each distinct context once, then every choice): no exact scorer of a transformer, whose passes are large
matrix products either way, gains much more than that. Results go to --out as JSON and a table is printed."""
import argparse, json, sys
from pathlib import Path
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from llmtrain.data import load_corpus
from llmtrain.models import GPT, GPTConfig, RNNLM, RNNConfig
from llmtrain.preprocessing import CharTokenizer, train_tokenizer
from llmtrain.tasks import get_task, scoring_speed

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--items', type=int, default=40)
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--block', type=int, default=512)
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--smoke', action='store_true')
    ap.add_argument('--out', default='bench/out/tasks.json')
    a = ap.parse_args()
    torch.set_num_threads(a.threads); torch.manual_seed(0)
    text = load_corpus('tinyshakespeare') + load_corpus('pydoc')
    w = dict(n_layer=1, n_embd=32) if a.smoke else dict(n_layer=4, n_embd=128)
    if a.smoke: a.items, a.repeats = 4, 1
    rows = []
    for tname in ('char', 'bpe'):
        tok = CharTokenizer.train(text) if tname == 'char' else train_tokenizer('bpe', text, vocab_size=300 if a.smoke else 4096)
        rl = max(w['n_layer'] // 2, 1)
        models = {f"gpt {w['n_layer']}x{w['n_embd']}": GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=a.block, n_head=4, **w)),
                  f"lstm {rl}x{w['n_embd']}": RNNLM(RNNConfig(vocab_size=tok.vocab_size, block_size=a.block, cell='lstm', n_layer=rl, n_embd=w['n_embd']))}
        for mname, m in models.items():
            m.eval()
            for task, fs in (('shakespeare_speaker', 0), ('shakespeare_speaker', 3), ('pydoc_cloze', 0)):
                r = scoring_speed(m, tok, get_task(task, n=a.items, fewshot=fs), repeats=a.repeats)
                rows.append(dict(model=mname, tokenizer=f'{tname} {tok.vocab_size}', task=task, fewshot=fs, **r))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(dict(threads=a.threads, block=a.block, rows=rows), indent=1))
    print(f"{'model':12s} {'tokenizer':10s} {'task':20s} {'shots':>5s} {'items':>5s} {'trunc':>5s} {'batched it/s':>13s} {'one-by-one it/s':>16s} {'speedup':>8s} {'tokens':>7s} {'max ll diff':>11s}")
    for r in rows:
        print(f"{r['model']:12s} {r['tokenizer']:10s} {r['task']:20s} {r['fewshot']:5d} {r['items']:5d} {r['truncated']:5d} {r['batched_items_per_s']:13.1f} {r['one_by_one_items_per_s']:16.1f} "
              f"{r['speedup']:7.2f}x {r['token_ratio']:6.2f}x {r['max_ll_diff']:11.1e}")

if __name__ == '__main__': main()
