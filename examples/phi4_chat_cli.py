"""The terminal chat from the KAITO phi-4 guide: ``python3 examples/phi4_chat_cli.py``.

The same as ``kaito chat``: it talks to ``$KAITO_ENDPOINT`` (http://localhost:8080 by default)
and takes the same flags (``--model``, ``--system``, ``--temperature``, ``--max-tokens``).
"""

from __future__ import annotations

import sys

from pykaito.cli.main import main

if __name__ == "__main__":
    sys.argv = [sys.argv[0], "chat", *sys.argv[1:]]
    main()
