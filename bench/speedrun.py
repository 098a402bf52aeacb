"""Wall-clock to a validation loss: the speedrun preset against the shipped CPU recipe, side by side in one time window.

    python bench/speedrun.py                  # both configs, 2 rounds, alternating order (about 6 minutes on 2 quiet cores)
    python bench/speedrun.py --rounds 1 --target 1.88
    python bench/speedrun.py --smoke          # 30 iterations of each, target 10: a check that the script runs (~1 minute)

Each run is `llmtrain train --config X` in a fresh process (the same code path as a user's), its own run folder, no progress
bar, no sample. Time to the target is the run's own training clock (`elapsed_s` in metrics.csv: steps, logging and evaluations,
not process start-up or data loading) at its first evaluation whose val_loss, rounded to the two decimals the target is stated in, is <= --target
(200 validation batches in both configs; the recipe's own 1.8808 at iteration 2000 counts as 1.88); a run that never
reaches it counts as missing. Rounds alternate which config goes first, so both see the same
machine load. The ratio (speedrun / baseline, lower is better) is that of the medians over rounds. Target: <= 0.5x.
Results go to --out as JSON and a table is printed last."""
import argparse, json, os, statistics, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def run(config, out_dir, extra):
    "Train `config` in a fresh process; return its metrics rows and the process wall-clock."
    name = Path(config).stem
    cmd = [sys.executable, '-m', 'llmtrain.cli', 'train', '--config', str(config), f'out_dir={out_dir}', f'name={name}',
           'progress=false', 'sample_tokens=0', *extra]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, 'PYTHONPATH': str(ROOT)})
    wall = time.perf_counter() - t0
    if r.returncode: raise SystemExit(f"{config} failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    import pandas as pd
    df = pd.read_csv(Path(out_dir)/name/'metrics.csv')
    return df, wall

def summary(df, target):
    "First evaluation at or below `target`: its iteration and training clock; and the final validation loss."
    ev = df.dropna(subset=['val_loss'])
    hit = ev[ev.val_loss.round(2) <= target]                                # at the two decimals the target is stated in
    first = hit.iloc[0] if len(hit) else None
    clock = df['elapsed_s'].ffill()                                        # eval rows may carry no clock of their own
    t = None if first is None else float(clock.loc[first.name])
    return dict(iter_to_target=None if first is None else int(first['iter']), s_to_target=t,
                final_val=float(ev.val_loss.iloc[-1]), iters=int(df['iter'].max()), train_s=float(clock.iloc[-1]))

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--speedrun', default=str(ROOT/'configs'/'shakespeare-char-speedrun.yaml'))
    p.add_argument('--baseline', default=str(ROOT/'configs'/'shakespeare-char-cpu.yaml'))
    p.add_argument('--target', type=float, default=None, help='validation loss to reach (default 1.88; 10 with --smoke)')
    p.add_argument('--rounds', type=int, default=None, help='default 2 (1 with --smoke)')
    p.add_argument('--smoke', action='store_true')
    p.add_argument('--out', default=str(ROOT/'bench'/'out'/'speedrun.json'))
    a = p.parse_args()
    target = a.target if a.target is not None else (10.0 if a.smoke else 1.88)
    rounds = a.rounds or (1 if a.smoke else 2)
    extra = ['max_iters=30', 'eval_interval=30', 'eval_iters=4', 'lr_decay_iters=30', 'warmup_iters=5'] if a.smoke else []
    res = dict(target=target, rounds=rounds, runs=[], threads=os.environ.get('OMP_NUM_THREADS'),
               started=time.strftime('%Y-%m-%dT%H:%M:%S%z'))
    configs = dict(speedrun=a.speedrun, baseline=a.baseline)
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            order = ['speedrun', 'baseline'] if r % 2 == 0 else ['baseline', 'speedrun']
            for which in order:
                df, wall = run(configs[which], Path(tmp)/f'{which}-{r}', extra)
                row = dict(round=r, config=which, file=str(Path(configs[which]).relative_to(ROOT)) if Path(configs[which]).is_relative_to(ROOT)
                           else configs[which], wall_s=round(wall, 2), **summary(df, target))
                res['runs'].append(row); print(row, flush=True)
    med = {}
    for which in configs:
        ts = [x['s_to_target'] for x in res['runs'] if x['config'] == which]
        med[which] = statistics.median(ts) if all(t is not None for t in ts) else None
    res['median_s_to_target'] = med
    res['ratio'] = None if None in med.values() else round(med['speedrun'] / med['baseline'], 3)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(f"\n== bench/speedrun.py: seconds of training to val loss <= {target} (200 eval batches), {rounds} round(s) ==")
    print(f"{'config':10s} {'round':>5s} {'iters':>6s} {'to target':>10s} {'s to target':>12s} {'final val':>10s} {'wall s':>8s}")
    for x in res['runs']:
        s = '-' if x['s_to_target'] is None else f"{x['s_to_target']:.1f}"
        print(f"{x['config']:10s} {x['round']:5d} {x['iters']:6d} {str(x['iter_to_target']):>10s} {s:>12s} {x['final_val']:10.4f} {x['wall_s']:8.1f}")
    print(f"ratio speedrun / baseline (medians): {res['ratio']}  (target <= 0.5)")
    print(f"results in {a.out}")

if __name__ == '__main__': main()
