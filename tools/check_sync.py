"""Fail when `nbdev_export`, `nbdev_clean` or `tools/readme.py` would change a tracked file (CI runs this)."""
import subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def changed():
    out = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=all', '--', 'llmtrain', 'nbs', 'README.md'],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [l for l in out.splitlines() if l.strip()]

before = changed()
if before: sys.exit('Uncommitted changes before the check; commit or stash them first:\n' + '\n'.join(before))
for cmd in (['nbdev_export'], ['nbdev_clean'], [sys.executable, 'tools/readme.py']):
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
after = changed()
if after:
    print('These files change under nbdev_export / nbdev_clean / tools/readme.py; run `make lib` and commit:')
    print('\n'.join(after)); sys.exit(1)
print('notebooks, library and README.md are in sync')
