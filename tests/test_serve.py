"""`llmtrain serve` and `llmtrain chat` with real clients: the official `openai` package against a uvicorn subprocess,
headless Chromium on the chat page, a bounded load test, and a pseudo-terminal for the chat. The model is a tiny
run trained here for a few steps on pydoc (its replies are gibberish; the protocol is what is tested)."""
import asyncio, json, re, subprocess, sys, time, threading
from pathlib import Path
import pytest, torch

ROOT = Path(__file__).resolve().parents[1]
KEY = 'sk-test-key'

@pytest.fixture(scope='module')
def run_dir(tmp_path_factory, llmtrain_cache):
    from llmtrain.core import load_config
    from llmtrain.training import train
    out = tmp_path_factory.mktemp('runs')
    train(load_config(None, ['corpus=pydoc', 'max_iters=30', 'n_layer=2', 'n_head=2', 'n_embd=48', 'block_size=128',
                             'batch_size=8', 'eval_interval=30', 'eval_iters=2', 'sample_tokens=0', 'progress=False',
                             'warmup_iters=5', 'lr=3e-3', f'out_dir={out}', 'name=tiny', 'device=cpu']))
    return out/'tiny'

@pytest.fixture(scope='module')
def loaded(run_dir):
    from llmtrain.serve import load_chat_model
    return load_chat_model(run_dir)

def start_server(*args):
    "`llmtrain serve ARGS` as a real uvicorn subprocess on a free 127.0.0.1 port: `(process, base URL)`."
    p = subprocess.Popen([sys.executable, '-m', 'llmtrain.cli', 'serve', *map(str, args), '--port', '0', '--device', 'cpu'],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url, t0, lines = None, time.time(), []
    while url is None and time.time() - t0 < 120:
        line = p.stdout.readline()
        if not line and p.poll() is not None: break
        lines.append(line)
        if m := re.search(r'at (http://127\.0\.0\.1:\d+) ', line): url = m.group(1)
    assert url, ''.join(lines)
    threading.Thread(target=p.stdout.read, daemon=True).start()        # keep draining its output
    return p, url

@pytest.fixture(scope='module')
def server(run_dir):
    "`llmtrain serve` on the tiny run, with an API key."
    p, url = start_server('--run', run_dir, '--api-key', KEY, '--max-batch', '16')
    yield url
    p.terminate(); p.wait(timeout=20)

def client(url, key=KEY):
    import openai
    return openai.OpenAI(base_url=url + '/v1', api_key=key, max_retries=0, timeout=60)

CONV = [dict(role='system', content='Be brief.'), dict(role='user', content='A list?'),        # 108 tokens with the markers
        dict(role='assistant', content='Items.'), dict(role='user', content='Tuple?')]

def test_openai_chat_stream_and_completions(server):
    c = client(server)
    models = c.models.list().data
    assert [m.id for m in models] == ['tiny']
    r = c.chat.completions.create(model='tiny', messages=CONV, max_tokens=15, temperature=0)
    text = r.choices[0].message.content
    assert r.choices[0].finish_reason in ('stop', 'length') and r.usage.completion_tokens >= 1 and r.usage.prompt_tokens > 20
    pieces = [ch.choices[0].delta.content or '' for ch in c.chat.completions.create(
        model='tiny', messages=CONV, max_tokens=15, temperature=0, stream=True)]
    assert len([p for p in pieces if p]) > 1 and ''.join(pieces) == text          # streamed in pieces, the same greedy text
    cr = c.completions.create(model='tiny', prompt='The with statement', max_tokens=20, temperature=0)
    assert cr.choices[0].finish_reason == 'length' and cr.usage.completion_tokens == 20
    streamed = ''.join(ch.choices[0].text for ch in c.completions.create(model='tiny', prompt='The with statement', max_tokens=20,
                                                                         temperature=0, stream=True))
    assert streamed == cr.choices[0].text
    a = c.completions.create(model='tiny', prompt='x', max_tokens=20, temperature=1.0, seed=5).choices[0].text
    assert a == c.completions.create(model='tiny', prompt='x', max_tokens=20, temperature=1.0, seed=5).choices[0].text
    cut = cr.choices[0].text[5:8]                                             # a stop string: the reply ends before it
    st = c.completions.create(model='tiny', prompt='The with statement', max_tokens=20, temperature=0, stop=[cut])
    assert st.choices[0].text == cr.choices[0].text[:cr.choices[0].text.find(cut)] and st.choices[0].finish_reason == 'stop'

def test_openai_errors(server):
    import openai
    c = client(server)
    for bad in (dict(temperature=7), dict(top_p=0), dict(max_tokens=0), dict(n=2), dict(messages=[dict(role='bot', content='x')])):
        with pytest.raises(openai.BadRequestError) as e:
            c.chat.completions.create(**(dict(model='tiny', messages=CONV) | bad))
        assert set(e.value.body) >= {'message', 'type', 'param', 'code'} and e.value.body['param'] in bad
    long = 'word ' * 60                                                        # 300 characters > 128 tokens of context
    with pytest.raises(openai.BadRequestError) as e:
        c.completions.create(model='tiny', prompt=long, max_tokens=5)
    assert e.value.code == 'context_length_exceeded'
    r = c.completions.create(model='tiny', prompt=long, max_tokens=5, extra_body=dict(truncate_prompt_tokens=100))
    assert r.usage.prompt_tokens == 100 and r.usage.completion_tokens == 5
    with pytest.raises(openai.AuthenticationError): client(server, 'wrong').models.list()
    with pytest.raises(openai.NotFoundError): c.chat.completions.create(model='gpt-4', messages=CONV)
    import urllib.request, urllib.error
    with pytest.raises(urllib.error.HTTPError) as e:                         # a body that is not JSON
        urllib.request.urlopen(urllib.request.Request(server + '/v1/completions', b'{', {'Authorization': f'Bearer {KEY}'}))
    assert e.value.code == 400 and json.loads(e.value.read())['error']['type'] == 'invalid_request_error'

class Slow(torch.nn.Module):
    "A model whose every forward pass takes at least `delay` seconds (so a test can act mid-reply)."
    def __init__(self, m, delay=0.02):
        super().__init__(); self.m, self.config, self.delay = m, m.config, delay
    def forward(self, *a, **k): time.sleep(self.delay); return self.m(*a, **k)

def test_queue_full_and_disconnect(loaded):
    import openai, httpx
    from llmtrain.serve import Engine, create_app, ServerThread
    model, tok, _ = loaded
    eng = Engine(Slow(model), tok, max_batch=1, max_queue=1)
    with ServerThread(create_app(eng, 'tiny')) as srv:
        c = client(srv.url)
        with httpx.Client(timeout=30) as h:
            body = dict(model='tiny', prompt='a', max_tokens=100, stream=True)
            with h.stream('POST', srv.url + '/v1/completions', json=body) as s1, h.stream('POST', srv.url + '/v1/completions', json=body) as s2:
                # the headers came back: both are queued (one generating, one waiting), so a third is refused
                with pytest.raises(openai.RateLimitError) as e:
                    c.completions.create(model='tiny', prompt='b', max_tokens=5)
                assert e.value.code == 'queue_full'
            # both clients went away mid-stream: their slots are freed at the next step
            t0 = time.time()
            while (eng.active or eng.waiting) and time.time() - t0 < 10: time.sleep(0.02)
            assert not eng.active and not eng.waiting and eng.stats['finish_cancelled'] == 2
            assert eng.stats['decode_rows'] < 100                              # far fewer than the 200 tokens asked for
        r = c.completions.create(model='tiny', prompt='b', max_tokens=5)       # and the server serves again
        assert r.usage.completion_tokens == 5
        with pytest.raises(httpx.TimeoutException):                            # a non-streamed request whose client gives up
            httpx.post(srv.url + '/v1/completions', json=dict(model='tiny', prompt='c', max_tokens=100), timeout=0.3)
        t0 = time.time()
        while (eng.active or eng.waiting) and time.time() - t0 < 10: time.sleep(0.02)
        assert not eng.active and eng.stats['finish_cancelled'] == 3 and eng.stats['finish_length'] == 1

def test_chat_page_in_chromium(loaded):
    "Headless Chromium: type a message, send it, the reply streams in (several chunks) and equals the API's greedy reply."
    from playwright.sync_api import sync_playwright
    import openai
    from llmtrain.serve import Engine, create_app, ServerThread
    model, tok, _ = loaded
    with ServerThread(create_app(Engine(model, tok), 'tiny', page_max_tokens=40, page_temperature=0)) as srv:
        want = client(srv.url).chat.completions.create(model='tiny', messages=[dict(role='user', content='hello there')],
                                                       max_tokens=40, temperature=0).choices[0].message.content
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path='/usr/bin/chromium', args=['--no-sandbox', '--disable-gpu',
                  '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'])
            try:
                page = b.new_page()
                page.goto(srv.url + '/', timeout=30000)
                assert page.inner_text('#model') == 'tiny'
                page.fill('#msg', 'hello there')
                page.click('#send')
                page.wait_for_function("document.getElementById('status').textContent === 'done'", timeout=30000)
                assert page.inner_text('#log .user') == 'hello there'
                assert page.eval_on_selector('#log .assistant', 'e => e.textContent') == want
                assert page.evaluate('chunks') > 1                               # it arrived in pieces
            finally: b.close()

def test_load_32_concurrent_streams(server):
    "200 streaming requests from 32 concurrent clients: no errors, and each greedy reply equals the same request served alone."
    import openai
    prompts = [(f'{w} ', 8 + 5 * (i % 7)) for i, w in enumerate('def class import with for while return yield try raise'.split())]
    c = client(server)
    alone = {p: c.completions.create(model='tiny', prompt=p[0], max_tokens=p[1], temperature=0).choices[0].text for p in prompts}
    async def main():
        ac = openai.AsyncOpenAI(base_url=server + '/v1', api_key=KEY, max_retries=0, timeout=120)
        sem, results = asyncio.Semaphore(32), []
        async def one(k):
            p = prompts[k % len(prompts)]
            async with sem:
                s = await ac.completions.create(model='tiny', prompt=p[0], max_tokens=p[1], temperature=0, stream=True)
                results.append((p, ''.join([ch.choices[0].text async for ch in s])))
        await asyncio.wait_for(asyncio.gather(*(one(k) for k in range(200))), timeout=300)
        await ac.close()
        return results
    results = asyncio.run(main())
    assert len(results) == 200
    bad = [(p, got, alone[p]) for p, got in results if got != alone[p]]
    assert not bad, bad[:3]

def test_chat_in_a_pseudo_terminal(run_dir, loaded):
    import pexpect
    from llmtrain.serve import ChatSession
    model, tok, _ = loaded
    want = ''.join(ChatSession(model, tok, temperature=0, max_tokens=40).reply('hello'))
    ch = pexpect.spawn(sys.executable, ['-m', 'llmtrain.cli', 'chat', '--run', str(run_dir), '--temperature', '0',
                                        '--max-tokens', '40', '--device', 'cpu'], cwd=str(ROOT), encoding='utf-8', timeout=60)
    try:
        ch.expect('chatting with tiny'); ch.expect('> ')
        ch.sendline('hello'); ch.expect('\r\n> ')
        assert ch.before.replace('\r\n', '\n').split('hello\n', 1)[1] == want     # the streamed reply, as in-process
        ch.sendline('/system You are terse.'); ch.expect(r'\(system message set\)')
        for i in range(4): ch.sendline(f'tell me about the with statement, part {i}'); ch.expect('\r\n> ')
        assert 'oldest turn' in ch.before or 'dropped' in ch.before
        ch.sendline('/reset'); ch.expect(r'\(conversation cleared\)'); ch.expect('> ')
        ch.sendline('hello'); ch.expect('\r\n> ')
        assert ch.before.replace('\r\n', '\n').split('hello\n', 1)[1] == want     # reset: the first reply again
        ch.sendline('/quit'); ch.expect(pexpect.EOF)
    finally: ch.close(force=True)
    # Ctrl-C stops a long reply and the session goes on
    ch = pexpect.spawn(sys.executable, ['-m', 'llmtrain.cli', 'chat', '--run', str(run_dir), '--max-tokens', '100000',
                                        '--device', 'cpu'], cwd=str(ROOT), encoding='utf-8', timeout=60)
    try:
        ch.expect('> '); ch.sendline('hello'); ch.expect('hello\r\n'); ch.expect(r'\S{3}')
        ch.sendintr(); ch.expect(r'\[stopped\]'); ch.expect('> ')
        ch.sendline('/reset'); ch.expect(r'\(conversation cleared\)')
        ch.sendline('/quit'); ch.expect(pexpect.EOF)
    finally: ch.close(force=True)

def test_serve_bench_smoke(tmp_path):
    out = tmp_path/'serve.json'
    r = subprocess.run([sys.executable, 'bench/serve.py', '--smoke', '--out', str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    res = json.loads(out.read_text())
    for k in ('one_at_a_time', 'batched'):
        assert res[k]['errors'] == 0 and res[k]['tokens_per_s'] > 0 and 0 < res[k]['p50_s'] <= res[k]['p99_s']
    assert res['speedup'] > 0 and res['same_replies']

def test_a_hugging_face_folder_chats_and_serves_like_its_run(run_dir, loaded, tmp_path):
    "`--model DIR`: the run exported as a Hugging Face folder (chapter 2b) gives the same greedy chat reply, in process and through `llmtrain serve`."
    from llmtrain.pretrained import save_pretrained
    from llmtrain.serve import load_chat_model, ChatSession
    model, tok, _ = loaded
    save_pretrained(model, tok, tmp_path/'hf')
    hm, htok, name = load_chat_model(model=tmp_path/'hf')
    assert name == 'hf' and htok.encode('hello there') == tok.encode('hello there')
    want = ''.join(ChatSession(model, tok, temperature=0, max_tokens=24).reply('hello'))
    assert ''.join(ChatSession(hm, htok, temperature=0, max_tokens=24).reply('hello')) == want
    p, url = start_server('--model', tmp_path/'hf')
    try:
        from openai import OpenAI
        r = OpenAI(base_url=url + '/v1', api_key='none').chat.completions.create(
            model='hf', messages=[{'role': 'user', 'content': 'hello'}], max_tokens=24, temperature=0)
        assert r.choices[0].message.content == want
    finally: p.terminate(); p.wait(timeout=20)

def test_compile_switch_gives_the_eager_text(run_dir, loaded, capsys):
    "`llmtrain generate --compile` and `llmtrain chat --compile` (a `ChatSession(compile=True)`): the eager text, greedy, over two turns."
    from llmtrain.cli import main
    from llmtrain.serve import ChatSession
    args = ['generate', '--run', str(run_dir), '--prompt', 'def ', '--n', '40', '--temperature', '0', '--device', 'cpu']
    main(args); eager = capsys.readouterr().out
    main(args + ['--compile']); assert capsys.readouterr().out == eager
    model, tok, _ = loaded
    a, b = ChatSession(model, tok, temperature=0, max_tokens=30), ChatSession(model, tok, temperature=0, max_tokens=30, compile=True)
    for text in ('hello', 'and a tuple?'): assert ''.join(b.reply(text)) == ''.join(a.reply(text))
