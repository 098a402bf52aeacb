"""The library's modules form layers: no module imports one that imports it back, at the top or inside a function."""
import ast
from pathlib import Path

LIB = Path(__file__).resolve().parents[1]/'llmtrain'

def import_graph() -> dict:
    "Module -> the llmtrain modules it imports anywhere in its source (function-level imports included)."
    mods = {p.stem for p in LIB.glob('*.py') if not p.stem.startswith('_')}
    graph = {}
    for m in mods:
        deps = set()
        for node in ast.walk(ast.parse((LIB/f'{m}.py').read_text())):
            if isinstance(node, ast.ImportFrom):
                name = node.module or ''
                if node.level == 1: deps.add(name.split('.')[0])
                elif name.startswith('llmtrain.'): deps.add(name.split('.')[1])
                elif name == 'llmtrain': deps |= {a.name for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name.split('.')[1] for a in node.names if a.name.startswith('llmtrain.')}
        graph[m] = (deps & mods) - {m}
    return graph

def test_no_import_cycles():
    graph, state, cycles = import_graph(), {}, []
    def visit(m, path):
        state[m] = 'open'
        for d in sorted(graph[m]):
            if state.get(d) == 'open': cycles.append(' -> '.join(path[path.index(d):] + [d]))
            elif d not in state: visit(d, path + [d])
        state[m] = 'done'
    for m in sorted(graph):
        if m not in state: visit(m, [m])
    assert not cycles, f"import cycles: {cycles}"

def test_the_graph_sees_function_level_imports(tmp_path):
    assert 'generation' in import_graph()['training'] and 'core' in import_graph()['data']
    assert import_graph()['core'] == set()                       # the bottom layer imports no other module

def test_the_config_errors_and_memory_check_load_without_torch():
    "`llmtrain.core` and the CLI's module import neither torch nor NumPy: `llmtrain train` parses its config and checks its memory plan before paying for torch (chapter 0, `precheck_memory`)."
    import subprocess, sys
    code = ("import sys, llmtrain.core, llmtrain.cli; heavy = {'torch', 'numpy', 'pandas', 'transformers'} & set(sys.modules); "
            "assert not heavy, heavy; print('ok')")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=LIB.parent)
    assert r.returncode == 0 and r.stdout.strip() == 'ok', r.stderr[-1000:]
