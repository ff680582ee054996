"""Tenure's pages: thin views that wire widgets to ``core`` and draw its figures.

One sub-folder per navigation group (``home/``, ``explore/``, ``data/``, ...) and ``shared/``
for the widgets every page uses. ``app.py`` registers the pages with ``st.navigation``.

The few files at the top of this folder (``retention.py``, ``data.py``) are not pages: Streamlit
answers the first request after a start from the top-level files of a ``pages/`` folder, before
``app.py`` has run, so each of them runs the app shell, which routes to the real page. A new page
that should be reachable by a direct link gets such a file named like its URL path.
"""
