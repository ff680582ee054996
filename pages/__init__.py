"""Tenure's pages: thin views that wire widgets to ``core`` and draw its figures.

One sub-folder per navigation group (``home/``, ``explore/``, ``data/``, ...) and ``shared/``
for the widgets every page uses. No page script sits directly in this folder: Streamlit runs the
``*.py`` files at the top of a ``pages/`` folder as a legacy page list without ``app.py``,
which would skip the shell (navigation, dataset switch, global filters).
"""
