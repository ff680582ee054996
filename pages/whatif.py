"""Direct link to /whatif: runs the app shell, which routes to ``pages/whatif/whatif.py``.

Streamlit serves the first request after a start from the top-level files of ``pages/``
until ``app.py`` has called ``st.navigation``; without this file a shared link to /whatif
opened first would show "Page not found".
"""

from pages.shared.direct_link import run_app_shell

run_app_shell()
