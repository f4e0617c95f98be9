"""The web chat from the KAITO phi-4 guide: ``streamlit run examples/phi4_chat_app.py``.

It runs the web app shipped with pykaito against ``$KAITO_ENDPOINT`` (http://localhost:8080 by
default, where ``kaito connect`` or ``kaito up`` serve the model). ``kaito ui`` does the same.
Run it with the project's virtualenv: ``make run`` once, then ``source .venv/bin/activate``.
The settings in ``examples/.streamlit/config.toml`` keep it private, as ``kaito ui`` does.
"""

from __future__ import annotations

import runpy
import sys
from importlib import resources, util

if util.find_spec("pykaito") is None:
    sys.exit(
        "pykaito is not installed in this Python: run `make run` once, then `source .venv/bin/activate`"
        " (or start it as `.venv/bin/streamlit run examples/phi4_chat_app.py`)"
    )

runpy.run_path(str(resources.files("pykaito.apps") / "webapp.py"), run_name="__main__")
