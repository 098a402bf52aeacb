"""The docs site as a reader sees it: built from the notebooks (tools/build_docs.py), served on 127.0.0.1 and driven in
Debian's headless Chromium through playwright (the Python package talks to the browser over the DevTools protocol; it
downloads no browser here: `executable_path` points at /usr/bin/chromium).

For every page: the title and summary of its notebook, at least one code cell on a chapter, every figure the executed
chapter holds (loaded: naturalWidth > 0), formulas typeset by MathJax wherever the notebook writes math (03 and 04 must),
the sidebar listing the chapters in order, no failed request, no request to a host other than 127.0.0.1. The whole site
is crawled for broken internal links and anchors, sidebar links are clicked, the offline search is queried. A
screenshot of each page (and the build's log) goes to `_docs_screens/` (git-ignored).

The site is built once per session into a temporary folder (a few minutes: every notebook runs with the test suite's
smoke parameters); with `LLMTRAIN_DOCS_BUILT=1` the test uses `_docs/` and `_docs_build/` from a `make docs` just run."""
from __future__ import annotations
import functools, json, os, re, subprocess, sys, threading
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.error import HTTPError
from urllib.parse import urldefrag, urljoin, urlparse
from urllib.request import urlopen
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tools'))
import build_docs  # noqa: E402  (the build's own notebook discovery and page names)

CHROMIUM = os.environ.get('LLMTRAIN_CHROMIUM', '/usr/bin/chromium')
FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync']
SCREENS = ROOT/'_docs_screens'
MATH_REQUIRED = {'03_losses.ipynb', '04_optimizers.ipynb'}   # the chapters whose formulas the issue names
NOTEBOOKS = build_docs.notebooks()
CHAPTERS = [nb for nb in NOTEBOOKS if nb.name != 'index.ipynb']
IMAGE_MIMES = ('image/png', 'image/jpeg', 'image/svg+xml', 'image/gif')

pytestmark = pytest.mark.xdist_group('docs')

# ---------------------------------------------------------------- the site, a server, a browser

@pytest.fixture(scope='session')
def site(tmp_path_factory):
    "(site folder, work folder): built now, or `_docs/` + `_docs_build/` when LLMTRAIN_DOCS_BUILT says they are fresh."
    if os.environ.get('LLMTRAIN_DOCS_BUILT'):
        out, work = ROOT/'_docs', ROOT/'_docs_build'
        assert (out/'index.html').is_file(), 'LLMTRAIN_DOCS_BUILT is set but _docs/ has no site: run `make docs`'
        return out, work
    from filelock import FileLock
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get('PYTEST_XDIST_WORKER') else base   # common to every xdist worker of this session (without xdist the parent is every session's)
    tmp = shared/'docs'
    out, work, failed = tmp/'site', tmp/'work', tmp/'FAILED'
    with FileLock(str(shared/'docs.lock')):                 # built once: a second worker waits, then reuses it
        if not (out/'index.html').is_file() and not failed.exists():
            tmp.mkdir(exist_ok=True)
            # one notebook at a time when another xdist worker shares the two cores
            jobs = '1' if int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1')) > 1 else '2'
            r = subprocess.run([sys.executable, str(ROOT/'tools'/'build_docs.py'), '--out', str(out), '--work', str(work),
                                '--jobs', jobs], cwd=ROOT, capture_output=True, text=True,
                               env=dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1'))
            SCREENS.mkdir(exist_ok=True)
            (SCREENS/'build.log').write_text(r.stdout + r.stderr, encoding='utf-8')   # per-notebook times, warnings
            if r.returncode: failed.write_text(f'{r.stdout[-4000:]}\n{r.stderr[-6000:]}', encoding='utf-8')
    assert not failed.exists(), f'docs build failed:\n{failed.read_text(encoding="utf-8")}'
    return out, work

class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *a): pass

@pytest.fixture(scope='session')
def server(site):
    "The site served by a local http.server thread; yields its base URL (http://127.0.0.1:PORT/)."
    httpd = ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(_Quiet, directory=str(site[0])))
    t = threading.Thread(target=httpd.serve_forever, daemon=True); t.start()
    yield f'http://127.0.0.1:{httpd.server_address[1]}/'
    httpd.shutdown(); httpd.server_close()

@pytest.fixture(scope='module')   # closed when this module is done: a sync playwright keeps an event loop running, which other modules (the chat page test, asyncio clients) must not meet
def browser(tmp_path_factory):
    "A headless Chromium context (fresh profile) driven by playwright."
    if not Path(CHROMIUM).is_file():
        pytest.fail(f'{CHROMIUM} is missing: `make system-deps` (what make test runs first), or set LLMTRAIN_CHROMIUM')
    try: from playwright.sync_api import sync_playwright
    except ImportError: pytest.fail('playwright is missing: `pip install -e ".[dev]"` (it needs no browser download)')
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(tmp_path_factory.mktemp('chromium-profile')), headless=True,
                                                   executable_path=CHROMIUM, args=FLAGS,
                                                   viewport={'width': 1280, 'height': 900})
        yield ctx
        ctx.close()

class Visit:
    "Open `url` in a new page and record every request, failed response and page error while it is open."
    def __init__(self, ctx, url):
        self.page, self.requests, self.failures, self.errors = ctx.new_page(), [], [], []
        self.page.on('request', lambda r: self.requests.append(r.url))
        self.page.on('requestfailed', lambda r: self.failures.append(f'{r.url} ({r.failure})'))
        self.page.on('response', lambda r: r.status >= 400 and self.failures.append(f'{r.url} (HTTP {r.status})'))
        self.page.on('pageerror', lambda e: self.errors.append(str(e)))
        self.response = self.page.goto(url, wait_until='load')

    def external(self):
        "Requests to any host but 127.0.0.1 (data: and blob: URLs stay in the page)."
        return [u for u in self.requests if urlparse(u).scheme not in ('data', 'blob') and urlparse(u).hostname != '127.0.0.1']

    def __enter__(self): return self
    def __exit__(self, *a): self.page.close()

# ---------------------------------------------------------------- what each notebook says the page must show

def front(nb: Path) -> tuple[str, str]:
    "The notebook's title and summary (its first cell: `# Title` and `> summary`)."
    src = ''.join(json.loads(nb.read_text(encoding='utf-8'))['cells'][0]['source'])
    title = re.search(r'^#\s+(.+?)\s*$', src, re.M)
    summary = re.search(r'^>\s+(.+?)\s*$', src, re.M)
    return (title.group(1) if title else ''), (summary.group(1) if summary else '')

def plain(md: str) -> str:
    "Markdown inline text as a browser shows it: no backticks or emphasis marks, links as their text, spaces folded."
    md = re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', md)
    return ' '.join(md.replace('`', '').replace('**', '').split())

def processed(work: Path, nb: Path) -> dict:
    return json.loads((work/'src'/f'{build_docs.page_name(nb)}.ipynb').read_text(encoding='utf-8'))

def shown(cell) -> bool:
    tags = cell.get('metadata', {}).get('tags', [])
    return not ({'remove-cell', 'remove-output'} & set(tags))

def n_figures(work, nb) -> int:
    "Image outputs the executed, processed chapter holds (outputs a directive hides excluded)."
    return sum(any(m in o.get('data', {}) for m in IMAGE_MIMES)
               for c in processed(work, nb)['cells'] if c['cell_type'] == 'code' and shown(c) for o in c['outputs'])

def n_code_cells(work, nb) -> int:
    return sum(c['cell_type'] == 'code' and c['source'].strip() != '' and
               not ({'remove-cell', 'remove-input'} & set(c.get('metadata', {}).get('tags', [])))
               for c in processed(work, nb)['cells'])

_MATH = re.compile(r'\$\$.+?\$\$|(?<![\\$])\$(?=\S)[^$\n]+?(?<=\S)\$(?!\d)', re.S)
def n_formulas(nb: Path) -> int:
    "Formulas the notebook's markdown writes (`$...$` and `$$...$$`)."
    cells = json.loads(nb.read_text(encoding='utf-8'))['cells']
    return sum(len(_MATH.findall(''.join(c['source']))) for c in cells if c['cell_type'] == 'markdown')

def settle(page):
    "Wait for MathJax (when the page loads it) and for every image, lazy ones included, to finish loading."
    if page.evaluate("() => !!document.querySelector('script[src*=\"mathjax\"]')"):
        page.wait_for_function('() => window.MathJax && MathJax.startup && MathJax.startup.promise', timeout=30_000)
        page.evaluate('() => MathJax.startup.promise.then(() => true)')
    page.evaluate("""async () => { const imgs = [...document.images];
        imgs.forEach(i => { i.loading = 'eager'; });
        await Promise.all(imgs.map(i => i.decode().catch(() => null))); }""")

# ---------------------------------------------------------------- per page

@pytest.mark.parametrize('nb', NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_page(nb, site, server, browser):
    out, work = site
    url = server + f'{build_docs.page_name(nb)}.html'
    with Visit(browser, url) as v:
        page = v.page
        assert v.response is not None and v.response.status == 200, f'{url} did not load'
        settle(page)
        SCREENS.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENS/f'{nb.stem}.png'), full_page=True)

        title, summary = front(nb)
        assert title, f'{nb.name} has no `# Title` in its first cell'
        h1 = page.locator('article h1').first.inner_text().replace('#', '').strip()
        assert h1 == plain(title), f'{url}: title {h1!r}, notebook says {title!r}'
        if summary:
            got = ' '.join(page.locator('article .summary').first.inner_text().split())
            assert got == plain(summary), f'{url}: summary {got!r}, notebook says {summary!r}'
        assert page.title().startswith(plain(title)), page.title()

        if nb.name != 'index.ipynb':
            cells = page.locator('article div.cell div.cell_input').count()
            assert cells >= 1, f'{url} shows no code cell'
            assert cells == n_code_cells(work, nb), f'{url}: {cells} code cells shown, the chapter has {n_code_cells(work, nb)}'

        imgs = page.evaluate("""() => [...document.querySelectorAll('article .cell_output img')]
                                      .map(i => ({src: i.currentSrc || i.src, w: i.naturalWidth, ok: i.complete}))""")
        want = n_figures(work, nb)
        assert len(imgs) == want, f'{url}: {len(imgs)} figures shown, the executed chapter made {want}'
        broken = [i['src'] for i in imgs if not (i['ok'] and i['w'] > 0)]
        assert not broken, f'{url}: figures that did not load: {broken}'

        formulas = n_formulas(nb)
        if nb.name in MATH_REQUIRED: assert formulas > 0, f'{nb.name} should write formulas'
        if formulas:
            typeset = page.locator('article mjx-container').count()
            assert typeset >= formulas, f'{url}: {typeset} formulas typeset, the notebook writes {formulas}'
            assert page.locator('article mjx-merror').count() == 0, f'{url}: MathJax reports TeX errors'
        prose = page.evaluate("""() => { const a = document.querySelector('article').cloneNode(true);
                                 a.querySelectorAll('pre, code, mjx-container, .cell_output').forEach(e => e.remove());
                                 return a.innerText; }""")
        assert '$$' not in prose and '\\frac' not in prose, f'{url}: raw TeX left in the text'

        nav = page.evaluate("""() => [...document.querySelectorAll('nav.bd-docs-nav a.reference.internal')]
                                     .map(a => a.getAttribute('href'))""")
        want_nav = [f'{build_docs.page_name(c)}.html' for c in CHAPTERS]
        here = f'{build_docs.page_name(nb)}.html'
        got_nav = [h.split('#')[0].split('/')[-1] or here for h in nav]   # the current page links to '#'
        assert [h for h in got_nav if h != 'index.html'] == want_nav, f'{url}: sidebar {got_nav}, chapters {want_nav}'

        assert not v.external(), f'{url} requested other hosts: {v.external()}'
        assert not v.failures, f'{url}: failed requests: {v.failures}'
        assert not v.errors, f'{url}: JavaScript errors: {v.errors}'

def test_sidebar_links_work(server, browser):
    "Clicking each chapter in the home page's sidebar opens that chapter."
    with Visit(browser, server + 'index.html') as v:
        for nb in CHAPTERS:
            link = v.page.locator(f'nav.bd-docs-nav a.reference.internal[href$="{build_docs.page_name(nb)}.html"]').first
            with v.page.expect_navigation(): link.click()
            assert v.page.url.endswith(f'{build_docs.page_name(nb)}.html'), v.page.url
            assert v.page.locator('article h1').first.inner_text().replace('#', '').strip() == plain(front(nb)[0])
        assert not v.external() and not v.failures and not v.errors, (v.external(), v.failures, v.errors)

def test_search_works_offline(server, browser):
    "Sphinx's own search finds an exported function on its chapter's page."
    with Visit(browser, server + 'search.html?q=cross_entropy') as v:
        v.page.wait_for_selector('#search-results ul.search li a', timeout=30_000)
        hits = v.page.evaluate("() => [...document.querySelectorAll('#search-results ul.search li a')].map(a => a.href)")
        assert any('losses.html' in h for h in hits), hits
        assert not v.external() and not v.failures and not v.errors, (v.external(), v.failures, v.errors)

# ---------------------------------------------------------------- the whole site

class _Links(HTMLParser):
    def __init__(self):
        super().__init__(); self.links, self.ids = [], set()
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get('id'): self.ids.add(a['id'])
        if tag == 'a' and a.get('name'): self.ids.add(a['name'])
        for k in ('href', 'src'):
            if a.get(k) and not (tag == 'link' and a.get('rel') in ('canonical',)): self.links.append(a[k])

def test_no_broken_internal_link(server, site):
    "Crawl every page reachable from the home page: each link inside the site answers 200, each #anchor exists."
    seen, queue, pages, broken = set(), [server + 'index.html'], {}, []
    links = []
    while queue:
        url = queue.pop()
        if url in seen: continue
        seen.add(url)
        try: body = urlopen(url).read()
        except HTTPError as e: broken.append(f'{url}: HTTP {e.code}'); continue
        if not url.endswith('.html'): continue
        p = _Links(); p.feed(body.decode('utf-8')); pages[url] = p.ids
        for l in p.links:
            target = urljoin(url, l)
            if urlparse(target).scheme not in ('http', 'https') or not target.startswith(server): continue
            links.append((url, target))
            queue.append(urldefrag(target)[0])
    for src, target in links:
        page, frag = urldefrag(target)
        if frag and page in pages and frag not in pages[page]:
            broken.append(f'{src}: #{frag} is not an anchor of {page}')
    html = {f.name for f in site[0].glob('*.html')}
    crawled = {urlparse(u).path.lstrip('/') for u in pages}
    assert {f'{build_docs.page_name(nb)}.html' for nb in NOTEBOOKS} <= crawled, sorted(html - crawled)
    assert not broken, f'{len(broken)} broken internal links:\n' + '\n'.join(sorted(set(broken))[:40])
