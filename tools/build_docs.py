"""Build the docs site from the notebooks, offline: `python tools/build_docs.py` (what `make docs` runs).

1. execute every notebook in `nbs/` (found by glob) through papermill's Python API with the test suite's smoke
   parameters (`tests/test_notebooks.py`'s `PARAMS`), `--jobs` at a time, one thread each, after nbdev's
   `add_show_docs` has added a `show_doc` cell under each exported definition without one (so the same run renders
   the API reference); an executed notebook is reused while its notebook, the library and its parameters are unchanged;
2. process it with nbdev's own notebook processors (`nbdev.processors.FilterDefaults`, what `nbdev.serve.proc_nbs`
   runs before quarto, less its kernel-side steps that step 1 did): `#|` directives honoured (hide, echo, output,
   export), `show_doc` inputs hidden, links to the API added, the `# Title` / `> summary` cell made front matter,
   which this script turns into the page's H1 and a summary block for Sphinx;
3. build the HTML with Sphinx, myst-nb (execution off: the outputs are already there) and sphinx-book-theme
   (`docs/conf.py`), with MathJax 3 installed from npm into the build folder (never a CDN) and Sphinx's own search.

Pages are named as nbdev names them (`03_losses.ipynb` -> `losses.html`), so nbdev's doc links
(`https://<doc_host><doc_baseurl>/losses.html#...`) are rewritten into links inside the site. The site goes to
`_docs/` (settings.ini's `doc_path`); the work folder (`_docs_build/`) keeps executed notebooks between builds."""
from __future__ import annotations
import argparse, ast, hashlib, json, os, re, shutil, subprocess, sys, time
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
DOCS = ROOT/'docs'
MATHJAX = 'mathjax@3'
# the parts of MathJax's es5 bundle the site loads: the combined component, TeX extensions it may autoload,
# the CHTML fonts, and the menu's accessibility modules
MATHJAX_PARTS = ['tex-mml-chtml.js', 'input', 'output/chtml', 'ui', 'a11y', 'sre', 'adaptors']
WIDGET_VIEW = 'application/vnd.jupyter.widget-view+json'

class DocsError(RuntimeError): "A notebook failed while the site was built."

def log(*a): print('[docs]', *a, flush=True)

def notebooks() -> list[Path]:
    "Every notebook of the book: `nbs/*.ipynb` but `_*`, `index.ipynb` first, then the chapters in file-name order."
    nbs = sorted(p for p in NBS.glob('*.ipynb') if not p.name.startswith('_'))
    return sorted(nbs, key=lambda p: (p.name != 'index.ipynb', p.name))

def page_name(nb: Path) -> str:
    "nbdev's page name for a notebook: `03_losses.ipynb` -> `losses` (as `nbdev.doclinks._nbpath2html`)."
    return re.sub(r'^\d+[a-zA-Z0-9]*_', '', nb.name.lower()).removesuffix('.ipynb')

def smoke_params() -> dict:
    "`tests/test_notebooks.py`'s `PARAMS` (read, not imported: the build must not need pytest)."
    tree = ast.parse((ROOT/'tests'/'test_notebooks.py').read_text(encoding='utf-8'))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, 'id', None) == 'PARAMS' for t in node.targets):
            return eval(compile(ast.Expression(node.value), 'PARAMS', 'eval'), {'__builtins__': {}, 'dict': dict})
    return {}

def params_for(nb: Path, extra: dict) -> dict:
    "The parameters the test suite gives `nb`: `smoke=True` plus its `PARAMS` for numbered notebooks, none for others."
    return dict(smoke=True, **extra.get(nb.name, {})) if nb.name[0].isdigit() else {}

def _digest(nb: Path, params: dict) -> str:
    h = hashlib.sha256(nb.read_bytes())
    for f in sorted((ROOT/'llmtrain').glob('*.py')): h.update(f.name.encode()); h.update(f.read_bytes())
    h.update(json.dumps(params, sort_keys=True).encode())
    return h.hexdigest()

def with_show_docs(src: Path, dst: Path):
    """`src` with the `show_doc` cells nbdev's `add_show_docs` adds after exported definitions that have none, so
    that papermill renders every piece of API documentation in the same run as the rest of the chapter."""
    from execnb.nbio import read_nb, write_nb
    from nbdev.process import NBProcessor
    from nbdev.processors import add_show_docs
    nb = read_nb(src)
    NBProcessor(nb=nb, procs=[add_show_docs], rm_directives=False).process()
    nb.cells = [_clean(dict(c, id=c.get('id') or f'showdoc-{i}')) for i, c in enumerate(nb.cells)]
    write_nb(nb, dst)

def _execute(args) -> tuple[str, float, bool, str]:
    "Execute one notebook into `dst` (in a worker process); skip it when `dst` holds this digest already."
    src, dst, params, digest, scratch = args
    dst = Path(dst)
    if not Path(src).exists(): return src, 0.0, False, 'gone'   # removed while the site was being built
    if dst.exists():
        try:
            if json.loads(dst.read_text(encoding='utf-8'))['metadata'].get('llmtrain_docs_digest') == digest:
                return src, 0.0, False, ''
        except (ValueError, KeyError): pass
    os.environ['OMP_NUM_THREADS'] = os.environ['MKL_NUM_THREADS'] = '1'
    import papermill as pm, nbformat
    t = time.time()
    Path(scratch).mkdir(parents=True, exist_ok=True)
    tmp, inp = dst.with_suffix('.tmp.ipynb'), dst.with_suffix('.in.ipynb')
    with_show_docs(Path(src), inp)
    try:
        nb = pm.execute_notebook(str(inp), str(tmp), parameters=params, cwd=scratch, kernel_name='python3',
                                 progress_bar=False, log_output=False)
    except pm.PapermillExecutionError as e:   # the page shows the notebook up to the failing cell and its traceback
        tmp.replace(dst); inp.unlink()
        return src, time.time() - t, True, f'{e.ename}: {e.evalue} (cell {e.exec_count})'
    nb['metadata']['llmtrain_docs_digest'] = digest
    nbformat.write(nb, str(tmp))
    tmp.replace(dst); inp.unlink()
    return src, time.time() - t, True, ''

def execute_all(nbs: list[Path], work: Path, jobs: int, force: bool) -> tuple[list[Path], list[Path], dict]:
    "Execute the notebooks, `jobs` at a time; return those still there, their executed copies (`work/exec`), the failures."
    out = work/'exec'; out.mkdir(parents=True, exist_ok=True)
    extra = smoke_params()
    tasks = []
    for nb in nbs:
        params = params_for(nb, extra)
        digest = 'force' if force else _digest(nb, params)
        if force and (out/nb.name).exists(): (out/nb.name).unlink()
        tasks.append((str(nb), str(out/nb.name), params, digest, str(work/'scratch'/nb.stem)))
    failed = {}
    with _pool(jobs) as ex:
        for src, secs, ran, err in ex.map(_execute, tasks):
            name = Path(src).name
            if err == 'gone': log(f'{name} was removed during the build; left out'); continue
            if err: failed[name] = err; log(f'FAILED {name} after {secs:.1f}s: {err}')
            else: log(f'executed {name} in {secs:.1f}s' if ran else f'{name}: unchanged, reused')
    return [nb for nb in nbs if nb.exists()], [out/nb.name for nb in nbs if nb.exists()], failed

def _pool(jobs):
    "Worker processes started fresh (spawn): nbdev and IPython imports in this process must not leak into them."
    return ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=multiprocessing.get_context('spawn'))

def _front(fm: dict) -> str:
    "The H1 and summary block that replace nbdev's front matter (Sphinx takes a page's title from its first H1)."
    title, desc = fm.get('title', ''), fm.get('description', '')
    md = f'# {title}\n'
    if desc: md += f'\n```{{container}} summary\n{desc}\n```\n'
    return md

_DIRECTIVE = re.compile(r'^#\|\s*([\w-]+)\s*:?\s*(.*?)\s*$')

def _myst_cell(cell) -> dict | None:
    "One processed cell as myst-nb reads it: `#|` lines dropped and mapped to myst-nb tags, widget views dropped."
    src = cell['source'] if isinstance(cell['source'], str) else ''.join(cell['source'])
    if cell['cell_type'] == 'code':
        lines, dirs = src.splitlines(), {}
        while lines and _DIRECTIVE.match(lines[0]):
            k, v = _DIRECTIVE.match(lines[0]).groups(); dirs[k] = v.lower(); lines.pop(0)
        src = '\n'.join(lines)
        tags = list(cell.get('metadata', {}).get('tags', []))
        if dirs.get('echo') == 'false': tags.append('remove-input')
        if dirs.get('output') == 'false': tags.append('remove-output')
        if dirs.get('include') == 'false': return None
        cell['metadata'] = {k: v for k, v in cell.get('metadata', {}).items() if k in ('tags',)}
        if tags: cell['metadata']['tags'] = sorted(set(tags) - {'parameters', 'injected-parameters'})
        outs = []
        for o in cell.get('outputs', []):
            data = o.get('data')
            if data and WIDGET_VIEW in data:   # a live widget (progress bar): keep its text, there is no kernel here
                data.pop(WIDGET_VIEW)
                if not data: continue
            if data and 'text/markdown' in data:   # show_doc's rules (`---`): docutils wants those between sections only
                md = data['text/markdown']
                data['text/markdown'] = re.sub(r'(?m)^---\s*$', '<hr class="showdoc-rule">\n', md if isinstance(md, str) else ''.join(md))
            outs.append(o)
        cell['outputs'] = outs
        if not src.strip() and not outs: return None
    cell['source'] = src
    return cell

_RUBRIC = re.compile(r'<p class="rubric" id="([^"]+)">(.*?)</p>', re.S)

def _pandoc_id(text: str) -> str:
    "The id pandoc (quarto) gives a heading, which nbdev's doc links use: `Trainer.fit` -> `trainer.fit`."
    text = re.sub(r'<[^>]+>', '', text).strip().lower()
    return re.sub(r'\s+', '-', re.sub(r'[^\w\s.-]', '', text))

def local_links(out: Path, site: str):
    """nbdev's doc links working inside the site: absolute links into it (`https://host/baseurl/page.html#x`) made
    relative (`page.html#x`), and each `show_doc` heading (docutils id `load-config`) given nbdev's id (`load_config`)."""
    for f in out.glob('*.html'):
        html = f.read_text(encoding='utf-8')
        new = html.replace(f'href="{site}', 'href="')
        ids = set(re.findall(r'\sid="([^"]+)"', new))
        def alias(m):
            a = _pandoc_id(m.group(2))
            if not a or a in ids: return m.group(0)
            ids.add(a)
            return f'<span id="{a}"></span>{m.group(0)}'
        new = _RUBRIC.sub(alias, new)
        if new != html: f.write_text(new, encoding='utf-8')

def process(executed: Path, src_nb: Path, dst: Path, toc: list[str] | None = None) -> dict:
    "Run nbdev's processors on an executed notebook, write what myst-nb reads to `dst`; return the front matter."
    from execnb.nbio import read_nb
    nb = read_nb(executed)
    nb.path_ = str(src_nb)          # FrontmatterProc names the page after the source notebook
    # papermill's injected parameters are not part of the book
    nb.cells = [c for c in nb.cells if 'injected-parameters' not in c.get('metadata', {}).get('tags', [])]
    _filter()(nb)
    from nbdev.frontmatter import _fm2dict
    fm = getattr(nb, 'frontmatter_', {}) or {}
    cells = []
    for c in nb.cells:
        if c.cell_type == 'raw' and _fm2dict(c.source): continue
        if c.cell_type == 'markdown' and c.source.strip().startswith('<!-- WARNING: THIS FILE WAS AUTOGENERATED'): continue
        c = _myst_cell(dict(c))
        if c is not None: cells.append(c)
    cells.insert(0, dict(cell_type='markdown', id='llmtrain-title', metadata={}, source=_front(fm)))
    if toc:
        body = '\n'.join(toc)
        cells.append(dict(cell_type='markdown', id='llmtrain-toc', metadata={},
                          source=f'```{{toctree}}\n:hidden:\n:maxdepth: 1\n:caption: Chapters\n\n{body}\n```'))
    meta = {k: nb.metadata[k] for k in ('kernelspec', 'language_info') if k in nb.metadata}
    out = dict(cells=[_clean(c) for c in cells], metadata=meta, nbformat=4, nbformat_minor=5)
    dst.write_text(json.dumps(out, indent=1, ensure_ascii=False), encoding='utf-8')
    return fm

def _clean(c: dict) -> dict:
    "A plain nbformat 4.5 cell (drop nbdev's private attributes such as `idx_` and `directives_`)."
    keep = {'markdown': ('cell_type', 'id', 'metadata', 'source', 'attachments'), 'raw': ('cell_type', 'id', 'metadata', 'source'),
            'code': ('cell_type', 'id', 'metadata', 'source', 'outputs', 'execution_count')}[c['cell_type']]
    out = {k: c[k] for k in keep if k in c}
    out.setdefault('metadata', {}); out.setdefault('id', hashlib.sha1(out['source'].encode()).hexdigest()[:8])
    if c['cell_type'] == 'code': out.setdefault('outputs', []); out['execution_count'] = out.get('execution_count') or None
    return out

def _filter():
    """nbdev's `FilterDefaults` without its two kernel-side steps: `add_show_docs` ran before papermill
    (`with_show_docs`), and papermill's run rendered every `show_doc`, so `exec_show_docs` has nothing left to do."""
    from nbdev.processors import FilterDefaults, exec_show_docs, add_show_docs

    class _Filter(FilterDefaults):
        def base_procs(self): return [p for p in super().base_procs() if p not in (exec_show_docs, add_show_docs)]
    return _Filter()

def _process(args):
    executed, src_nb, dst, toc = args
    return Path(src_nb).name, process(Path(executed), Path(src_nb), Path(dst), toc)

def process_all(nbs, executed, work: Path, jobs: int) -> Path:
    "Process every executed notebook into `work/src`, the Sphinx source folder; the home page carries the toctree."
    src = work/'src'
    if src.exists(): shutil.rmtree(src)
    src.mkdir(parents=True)
    toc = [page_name(nb) for nb in nbs if nb.name != 'index.ipynb']
    tasks = [(str(e), str(nb), str(src/f'{page_name(nb)}.ipynb'), toc if nb.name == 'index.ipynb' else None)
             for nb, e in zip(nbs, executed)]
    with _pool(jobs) as ex: list(ex.map(_process, tasks))
    return src

def mathjax(work: Path) -> Path:
    "MathJax 3 from npm into `work/npm`, its needed parts copied to `work/static/mathjax` (served by the site)."
    dst = work/'static'/'mathjax'
    if (dst/'tex-mml-chtml.js').exists(): return dst
    npm = shutil.which('npm')
    if not npm: sys.exit('npm is needed to install MathJax for the docs (Debian: apt-get install npm)')
    pkg = work/'npm'; pkg.mkdir(parents=True, exist_ok=True)
    es5 = pkg/'node_modules'/'mathjax'/'es5'
    if not (es5/'tex-mml-chtml.js').exists():
        env = dict(os.environ)
        # Node trusts only its own bundled CAs; trust the system's bundle too, as pip does (a registry behind a proxy)
        for ca in ('/etc/ssl/certs/ca-certificates.crt', '/etc/pki/tls/certs/ca-bundle.crt'):
            if 'NODE_EXTRA_CA_CERTS' not in env and Path(ca).is_file(): env['NODE_EXTRA_CA_CERTS'] = ca
        r = subprocess.run([npm, 'install', '--prefix', str(pkg), '--no-audit', '--no-fund', '--no-save', MATHJAX],
                           env=env, capture_output=True, text=True)
        if r.returncode: sys.exit(f'npm could not install {MATHJAX} for the docs:\n{(r.stdout + r.stderr)[-2000:]}')
    for part in MATHJAX_PARTS:
        s, d = es5/part, dst/part
        if s.is_dir(): shutil.copytree(s, d, dirs_exist_ok=True)
        elif s.exists(): d.parent.mkdir(parents=True, exist_ok=True); shutil.copy2(s, d)
    return dst

def sphinx(src: Path, out: Path, work: Path):
    "Sphinx + myst-nb + sphinx-book-theme over the processed notebooks (`docs/conf.py`); warnings are printed."
    env = dict(os.environ, LLMTRAIN_DOCS_STATIC=str(work/'static'))
    html = work/'html'    # built inside the work folder: myst-nb writes images to the output's parent/jupyter_execute
    if html.exists(): shutil.rmtree(html)
    subprocess.run([sys.executable, '-m', 'sphinx', '-b', 'html', '-q', '-E', '-c', str(DOCS),
                    '-d', str(work/'doctrees'), str(src), str(html)], check=True, env=env, cwd=ROOT)
    if out.exists(): shutil.rmtree(out)
    shutil.move(str(html), str(out))
    from nbdev.config import get_config
    cfg = get_config()
    base = cfg.doc_baseurl.strip('/')
    local_links(out, f"{cfg.doc_host.rstrip('/')}/{base + '/' if base else ''}")
    (out/'.nojekyll').touch()      # GitHub Pages: serve _static/ and _images/ as they are

def build(out=ROOT/'_docs', work=ROOT/'_docs_build', jobs=2, force=False) -> Path:
    "Execute, process and render the whole book into `out`."
    out, work = Path(out).resolve(), Path(work).resolve()
    t0 = time.time()
    nbs = notebooks()
    log(f'{len(nbs)} notebooks, {jobs} at a time')
    mathjax(work)
    nbs, executed, failed = execute_all(nbs, work, jobs, force)
    t1 = time.time(); log(f'executed in {t1 - t0:.0f}s')
    src = process_all(nbs, executed, work, jobs)
    t2 = time.time(); log(f'processed in {t2 - t1:.0f}s')
    sphinx(src, out, work)
    log(f'site in {out} ({time.time() - t2:.0f}s Sphinx, {time.time() - t0:.0f}s in all)')
    if failed:
        raise DocsError('These notebooks failed under papermill (their pages show the traceback); fix them and build '
                        'again:\n' + '\n'.join(f'  nbs/{k}: {v}' for k, v in failed.items()))
    return out

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default=str(ROOT/'_docs'), help='where the site goes')
    ap.add_argument('--work', default=str(ROOT/'_docs_build'), help='executed notebooks, MathJax, Sphinx sources')
    ap.add_argument('--jobs', type=int, default=2, help='notebooks executed at a time (one thread each)')
    ap.add_argument('--force', action='store_true', help='execute every notebook again')
    a = ap.parse_args()
    os.chdir(ROOT)
    try: build(a.out, a.work, a.jobs, a.force)
    except DocsError as e: sys.exit(str(e))
