"""The operator kill loop: SIGKILL at random points of its reconciles, N times in a row, then converge.

The operator runs as its own process (``python -m pykaito.operator``) against the Kubernetes emulator
on 127.0.0.1; see tests/operator/killloop.py for what each round does. Prints one table and exits
non-zero when anything is wrong after the last round: a duplicate or missing NodeClaim or child, a
Workspace not Ready, a deletion stuck on its finalizer.

    .venv/bin/python bench/reliability_operator.py               # 50 kills
    .venv/bin/python bench/reliability_operator.py --kills 10 --seed 3
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import kmock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.operator.faults import FaultyKube  # noqa: E402
from tests.operator.killloop import KillLoopResult, kill_loop  # noqa: E402


async def run(kills: int, workspaces: int, seed: int, workdir: Path) -> KillLoopResult:
    async with FaultyKube() as kube, kmock.Server(kube) as server:
        return await kill_loop(
            kube, str(server.url).rstrip("/"), workdir, kills=kills, workspaces=workspaces, seed=seed
        )


def table(result: KillLoopResult, seconds: float) -> str:
    writes = result.writes_before_kill
    rows = [
        ("kills (SIGKILL)", str(result.kills)),
        (
            "killed after n writes (min/median/max)",
            f"{min(writes)}/{sorted(writes)[len(writes) // 2]}/{max(writes)}",
        ),
        ("kill points", ", ".join(f"{k} x{v}" for k, v in result.kill_points.most_common())),
        ("workspaces created / deleted", f"{len(result.created)} / {len(result.deleted)}"),
        ("converged after the last kill (s)", f"{result.converge_seconds:.1f}"),
        ("problems", str(len(result.problems))),
        ("total time (s)", f"{seconds:.0f}"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def register() -> None:
    """The kill loop as a check of bench/reliability.py (50 kills; 3 in the short run)."""
    from reliability import Context, Result, check  # the running suite (see its load_other_suites)

    @check("operator kills", server=False)
    def operator_kill_loop(ctx: Context) -> Result:
        """The operator SIGKILLed at random writes of its reconciles, then converged with nothing lost."""
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="pykaito-kill-loop-") as tmp:
            found = asyncio.run(run(3 if ctx.short else 50, 3, 0, Path(tmp)))
        result = Result(
            figures={
                "kills": found.kills,
                "converged after (s)": round(found.converge_seconds, 1),
                "seconds": round(time.monotonic() - started),
            }
        )
        for problem in found.problems:
            result.fail(problem)
        return result


if "reliability" in sys.modules:
    register()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--workspaces", type=int, default=3, help="Workspaces at the start")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pykaito-kill-loop-") as tmp:
        result = asyncio.run(run(args.kills, args.workspaces, args.seed, Path(tmp)))
        print(table(result, time.monotonic() - started))
        for problem in result.problems:
            print(f"  PROBLEM: {problem}")
        if not result.ok:
            print((Path(tmp) / "operator.log").read_text()[-4000:], file=sys.stderr)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
