"""Write README.md from nbs/index.ipynb without quarto (`python tools/readme.py`; `--check` fails when it is stale).

Markdown cells are copied as they are; code cells become fenced Python blocks; cells tagged `hide` or starting
with `#| hide` are left out. This is what `nbdev_readme` produces, minus quarto's rendering of outputs."""
import json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def render(nb_path=ROOT/'nbs'/'index.ipynb') -> str:
    nb = json.loads(Path(nb_path).read_text(encoding='utf-8'))
    parts = ['<!-- generated from nbs/index.ipynb by tools/readme.py: edit the notebook, not this file -->']
    for c in nb['cells']:
        src = ''.join(c['source']).strip()
        if not src or src.startswith('#| hide') or 'hide' in c.get('metadata', {}).get('tags', []): continue
        parts.append(src if c['cell_type'] == 'markdown' else f'```python\n{src}\n```')
    return '\n\n'.join(parts) + '\n'

if __name__ == '__main__':
    out, text = ROOT/'README.md', render()
    if '--check' in sys.argv:
        if not out.exists() or out.read_text(encoding='utf-8') != text:
            sys.exit('README.md does not match nbs/index.ipynb: run `python tools/readme.py`')
        print('README.md matches nbs/index.ipynb')
    else:
        out.write_text(text, encoding='utf-8'); print(f'wrote {out}')
