"""The terminal chat from the KAITO phi-4 guide: ``python3 examples/phi4_chat_cli.py``.

The same as ``kaito chat``: it talks to ``$KAITO_ENDPOINT`` (http://localhost:8080 by default)
and takes the same flags (``--model``, ``--system``, ``--temperature``, ``--max-tokens``).
Run it with the project's virtualenv: ``make run`` once, then ``source .venv/bin/activate``.
"""

from __future__ import annotations

import sys
from importlib import util

if __name__ == "__main__":
    if util.find_spec("pykaito") is None:
        sys.exit(
            "pykaito is not installed in this Python: run `make run` once, then"
            " `source .venv/bin/activate` (or run `.venv/bin/python examples/phi4_chat_cli.py`)"
        )
    from pykaito.cli.main import main

    sys.argv = [sys.argv[0], "chat", *sys.argv[1:]]
    main()
