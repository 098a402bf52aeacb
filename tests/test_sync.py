"""The notebooks are the source: `nbdev_export`, `nbdev_clean` and `tools/readme.py` must change nothing.

Runs on a copy of the project, so it checks the working tree as it is (committed or not) and never rewrites it."""
import filecmp, shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def _tree(root: Path) -> dict:
    files = [*root.glob('nbs/*.ipynb'), *root.glob('llmtrain/*.py'), root/'README.md']
    return {p.relative_to(root).as_posix(): p for p in files}

def test_notebooks_library_and_readme_are_in_sync(tmp_path):
    copy = tmp_path/'proj'
    for d in ('nbs', 'llmtrain', 'tools'):
        shutil.copytree(ROOT/d, copy/d, ignore=shutil.ignore_patterns('__pycache__', '*.pyc', 'runs', '.ipynb_checkpoints'))
    for f in ('settings.ini', 'README.md', 'setup.py'): shutil.copy(ROOT/f, copy/f)
    bindir = Path(sys.executable).parent
    for cmd in ([str(bindir/'nbdev_export')], [str(bindir/'nbdev_clean')], [sys.executable, 'tools/readme.py']):
        r = subprocess.run(cmd, cwd=copy, capture_output=True, text=True)
        assert r.returncode == 0, f"{cmd[0]} failed:\n{r.stdout}\n{r.stderr}"
    before, after = _tree(ROOT), _tree(copy)
    assert sorted(before) == sorted(after), f"files appear or vanish: {sorted(set(before) ^ set(after))}"
    changed = [k for k in before if not filecmp.cmp(before[k], after[k], shallow=False)]
    assert not changed, f"these change under nbdev_export / nbdev_clean / tools/readme.py; run `make lib`: {changed}"
