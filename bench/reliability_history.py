"""History writers killed with SIGKILL mid-write: no acknowledged turn is lost, the file stays sound.

Each round starts a writer process that adds turns to one conversation of a fresh history file and
prints each message's id once ``add_message`` has returned (committed); the round kills it with
SIGKILL after a random short time. At the end every acknowledged message must be in the file and
``PRAGMA integrity_check`` must say ok. A check of bench/reliability.py (50 rounds; 5 short).
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WRITER = """
import sys
from pathlib import Path
from pykaito.apps.history import HistoryStore

store = HistoryStore(Path(sys.argv[1]))
conv = sys.argv[2]
n = 0
while True:
    n += 1
    message = store.add_message(conv, "user" if n % 2 else "assistant", f"turn {n} " + "x" * (n % 50))
    print(message.id, flush=True)
"""


def kill_rounds(rounds: int, seed: int = 0) -> tuple[int, list[str]]:
    """Run ``rounds`` killed writers on one file; the number of acknowledged turns, and problems."""
    from pykaito.apps.history import HistoryStore

    rng = random.Random(seed)
    problems: list[str] = []
    acknowledged: set[int] = set()
    with tempfile.TemporaryDirectory(prefix="pykaito-history-kill-") as tmp:
        path = Path(tmp) / "history.db"
        store = HistoryStore(path)
        conv = store.create_conversation("kill -9").id
        for _ in range(rounds):
            writer = subprocess.Popen(
                [sys.executable, "-c", WRITER, str(path), conv],
                stdout=subprocess.PIPE,
                text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            assert writer.stdout is not None
            first = writer.stdout.readline()  # the writer is up and has committed once
            if first.strip():
                acknowledged.add(int(first))
            time.sleep(rng.uniform(0.0, 0.2))
            writer.send_signal(signal.SIGKILL)
            rest, _ = writer.communicate(timeout=30)
            acknowledged.update(int(line) for line in rest.split() if line.strip().isdigit())
        with sqlite3.connect(path) as db:
            verdict = db.execute("PRAGMA integrity_check").fetchone()[0]
        if verdict != "ok":
            problems.append(f"integrity_check: {verdict}")
        stored = {m.id for m in store.messages(conv)}
        lost = acknowledged - stored
        if lost:
            problems.append(f"{len(lost)} acknowledged turns lost, e.g. {sorted(lost)[:5]}")
    return len(acknowledged), problems


def register() -> None:
    from reliability import Context, Result, check  # the running suite (see its load_other_suites)

    @check("history kill-9", server=False)
    def history_kill(ctx: Context) -> Result:
        """History writers SIGKILLed mid-write: every acknowledged turn kept, the file sound."""
        rounds = 5 if ctx.short else 50
        turns, problems = kill_rounds(rounds)
        result = Result(figures={"SIGKILLs": rounds, "acknowledged turns": turns, "lost": 0})
        for problem in problems:
            result.fail(problem)
        if not turns:
            result.fail("no turn was acknowledged: the writer never ran")
        return result


if "reliability" in sys.modules:
    register()

if __name__ == "__main__":
    count, found = kill_rounds(int(sys.argv[1]) if len(sys.argv) > 1 else 50)
    print(f"acknowledged turns: {count}; problems: {found or 'none'}")
    sys.exit(1 if found else 0)
