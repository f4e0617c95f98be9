"""The web chat from the KAITO phi-4 guide: ``streamlit run examples/phi4_chat_app.py``.

It runs the web app shipped with pykaito against ``$KAITO_ENDPOINT`` (http://localhost:8080 by
default, where ``kaito connect`` or ``kaito up`` serve the model). ``kaito ui`` does the same.
"""

from __future__ import annotations

import runpy
from importlib import resources

runpy.run_path(str(resources.files("pykaito.apps") / "webapp.py"), run_name="__main__")
