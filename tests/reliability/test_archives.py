"""Archive extraction and path traversal. The library extracts no archives today: corpora are text files, folders or
globs, and Fashion-MNIST/MNIST are gzip streams, which hold no paths. This guard fails the day an extraction call
(`extractall`, `extract`, `unpack_archive`) appears in llmtrain without the `filter='data'` that refuses `../` and
absolute members, so a tar/zip corpus can only come in safely."""
import ast
from pathlib import Path
import llmtrain

CALLS = {'extractall', 'extract', 'unpack_archive', '_extract_member'}

def extraction_calls(folder=Path(llmtrain.__file__).parent):
    for f in sorted(Path(folder).glob('*.py')):
        for node in ast.walk(ast.parse(f.read_text(encoding='utf-8'))):
            if isinstance(node, ast.Call):
                name = getattr(node.func, 'attr', getattr(node.func, 'id', None))
                if name in CALLS: yield f.name, node.lineno, name, {k.arg for k in node.keywords}

def test_every_archive_extraction_in_the_library_uses_the_data_filter():
    bad = [(f, line, name) for f, line, name, kw in extraction_calls() if 'filter' not in kw]
    assert not bad, f"archive extraction without filter='data' (path traversal): {bad}"

def test_the_guard_sees_an_unfiltered_extraction(tmp_path):
    "The scan itself works: it finds an unfiltered call in a module written for the test."
    (tmp_path/'m.py').write_text("import tarfile, shutil\ndef f(p, d):\n    with tarfile.open(p) as t: t.extractall(d)\n"
                                 "    shutil.unpack_archive(p, d, filter='data')\n")
    assert sorted((c[2], sorted(c[3])) for c in extraction_calls(tmp_path)) == [('extractall', []), ('unpack_archive', ['filter'])]
