"""Sphinx configuration of the llmtrain docs site (used by tools/build_docs.py, which feeds it notebooks that
papermill executed and nbdev processed). Everything the pages load is served by the site itself: MathJax from a
local copy (LLMTRAIN_DOCS_STATIC/mathjax, installed from npm by the build), no widget JavaScript from a CDN,
Sphinx's own search."""
import configparser, os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_ini = configparser.ConfigParser(interpolation=None)
_ini.read(ROOT/'settings.ini', encoding='utf-8')
_cfg = _ini['DEFAULT']

project = _cfg['title']
author = _cfg['author']
copyright = _cfg['copyright']
release = version = _cfg['version']

extensions = ['myst_nb']
exclude_patterns = ['_build', '**.ipynb_checkpoints']
master_doc = root_doc = 'index'

# myst-nb: the notebooks arrive executed; render what they hold
nb_execution_mode = 'off'
nb_merge_streams = True
nb_ipywidgets_js = {}                       # no require.js / widget manager from a CDN
myst_enable_extensions = ['dollarmath', 'amsmath', 'colon_fence', 'deflist', 'html_image', 'attrs_inline']
myst_dmath_double_inline = True             # `$$...$$` inside a paragraph (as the chapters write it) is display math
myst_heading_anchors = 4
suppress_warnings = ['myst.header', 'mystnb.unknown_mime_type', 'misc.highlighting_failure']

# MathJax 3 from the site itself, never a CDN
mathjax_path = 'mathjax/tex-mml-chtml.js'
mathjax3_config = {'tex': {'inlineMath': [['\\(', '\\)']], 'displayMath': [['\\[', '\\]']]},
                   'options': {'enableMenu': False}}

html_theme = 'sphinx_book_theme'
html_title = project
html_static_path = ['_static'] + ([os.environ['LLMTRAIN_DOCS_STATIC']] if os.environ.get('LLMTRAIN_DOCS_STATIC') else [])
html_css_files = ['llmtrain.css']
html_show_sourcelink = False
html_copy_source = False
html_theme_options = {
    'repository_url': _cfg['git_url'],
    'repository_branch': _cfg.get('branch', 'main'),
    'path_to_docs': _cfg.get('nbs_path', 'nbs'),
    'use_repository_button': True,
    'show_toc_level': 2,
    'home_page_in_toc': True,
    'navigation_with_keys': False,
}
html_context = {'default_mode': 'light'}
smartquotes = False                         # text as the notebooks write it (quotes in code names stay straight)
