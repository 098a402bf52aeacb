"""`llmtrain eval`, `generate` and `export`, and chat/serve's loader, read a run while another process trains it with a
checkpoint at every step: readers take no lock, never see a half-written file, and the writer goes on undisturbed."""
import json, os, signal, socket, time
import pytest
from llmtrain.training import load_checkpoint, read_metrics
from llmtrain.serve import load_chat_model
from relutil import TINY, popen_cli, run_cli, run_main

pytestmark = pytest.mark.xdist_group('interrupts')

def test_eval_generate_export_and_the_chat_loader_read_a_run_while_it_trains(tmp_path, capsys):
    rd = tmp_path/'busy'
    p = popen_cli('train', *TINY, 'max_iters=100000', 'eval_interval=100000', 'ckpt_interval=1', f'out_dir={tmp_path}', 'name=busy',
                  log=tmp_path/'log.txt')
    try:
        t0 = time.time()
        while not (rd/'ckpt.pt').exists():
            assert p.poll() is None and time.time() - t0 < 120, (tmp_path/'log.txt').read_text()
            time.sleep(0.01)
        seen, rounds = set(), 0
        while rounds < 3 or len(seen) < 3:                                 # at least 3 rounds over 3 different checkpoints
            rc, err = run_main(capsys, 'eval', '--run', rd, '--batches', '2', '--device', 'cpu')
            assert rc == 0 and json.loads((rd/'eval.json').read_text())['batches'] == 2, err
            rc, err = run_main(capsys, 'generate', '--run', rd, '--n', '8', '--device', 'cpu', '--temperature', '0')
            assert rc == 0, err
            rc, err = run_main(capsys, 'export', '--run', rd, '--to', tmp_path/f'hf{rounds}')
            assert rc == 0 and (tmp_path/f'hf{rounds}'/'model.safetensors').is_file(), err
            m, tok, name = load_chat_model(rd, None, 'cpu')                   # what chat and serve load
            assert name == 'busy' and tok is not None
            seen.add(load_checkpoint(rd/'ckpt.pt')['iter']); rounds += 1
            assert p.poll() is None, "the training run ended while it was being read"
        r = run_cli('generate', '--run', rd, '--n', '8', '--device', 'cpu')     # and once as a process of its own
        assert r.returncode == 0 and p.poll() is None, r.stderr
        holder = json.loads((rd/'.lock').read_text())                          # still the trainer's lock: readers took none
        assert holder['pid'] == p.pid and holder['host'] == socket.gethostname(), holder
    finally:
        if p.poll() is None: os.kill(p.pid, signal.SIGTERM)
        p.wait(timeout=120)
    assert p.returncode == 143, (tmp_path/'log.txt').read_text()[-3000:]    # the writer stopped as a SIGTERM stops it
    assert load_checkpoint(rd/'ckpt.pt')['iter'] >= int(read_metrics(rd/'metrics.csv')[-1]['iter']) and load_checkpoint(rd/'ckpt.pt')['iter'] > max(seen)
    assert not list(rd.glob('.*.tmp'))
    print(f"{rounds} rounds of eval, generate, export and load_chat_model over checkpoints {sorted(seen)}")
