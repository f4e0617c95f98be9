"""`kaito pull` against plain curl: the same file from the same stand-in hub on 127.0.0.1, in turns.

    PYTHONPATH=src python bench/pull_speed.py --size-mib 1024 --rounds 3

The hub runs in its own process. Both clients write to the same file system. The pull asks
huggingface_hub for the file's metadata (HEAD, redirect), streams the body (written, with O_DIRECT
where possible, and hashed with SHA-256 on two more threads) and fsyncs it before recording the
model; curl only writes. Each round runs curl and pull (and with --process a whole `kaito pull`
process, Python start-up included), each going first in turn, so that all meet the same load.
Prints each round (with the load average), then the best and the median of each and the ratios.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.netutil import free_port

from pykaito.catalog import load_catalog
from pykaito.catalog.embedded import embedded_gguf_path
from pykaito.models import ModelStore, parse_ref, pull

MIB = 1024**2


def make_file(path: Path, size_mib: int) -> None:
    """A GGUF header (the embedded model's) followed by random bytes up to ``size_mib``."""
    with path.open("wb") as out:
        out.write(embedded_gguf_path().read_bytes())
        while out.tell() < size_mib * MIB:
            out.write(os.urandom(min(16 * MIB, size_mib * MIB - out.tell())))


def serve(source: Path, port: int) -> None:
    """The stand-in hub with ``source`` published, until killed."""
    from tests.models.hubstub import running_hub

    with running_hub(port) as hub:
        hub.add("bench/big-GGUF", {source.name: source})
        print("ready", flush=True)
        threading.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--process", action="store_true", help="also time a `kaito pull` process (start-up included)"
    )
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return
    work = Path(tempfile.mkdtemp(prefix="pull-speed-"))
    try:
        source = work / "big-Q4_K_M.gguf"
        make_file(source, args.size_mib)
        size = source.stat().st_size
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}"
        with subprocess.Popen(
            [sys.executable, __file__, "--serve", str(source), "--port", str(port)],
            stdout=subprocess.PIPE,
            text=True,
        ) as hub:
            assert hub.stdout is not None and hub.stdout.readline().strip() == "ready"
            url = f"{endpoint}/bench/big-GGUF/resolve/main/{source.name}"
            curl_s, checked_s, pull_s, process_s = [], [], [], []

            def run_curl() -> None:
                target = work / "curl.out"
                started = time.perf_counter()
                subprocess.run(["curl", "-sSfL", "-o", str(target), url], check=True)
                curl_s.append(time.perf_counter() - started)
                started = time.perf_counter()
                subprocess.run(["sha256sum", str(target)], check=True, capture_output=True)
                checked_s.append(curl_s[-1] + time.perf_counter() - started)
                target.unlink()

            def run_pull() -> None:
                store = ModelStore(work / "store")
                started = time.perf_counter()
                pull(parse_ref(f"bench/big-GGUF:{source.name}", load_catalog()), store, endpoint=endpoint)
                pull_s.append(time.perf_counter() - started)
                shutil.rmtree(store.root)

            def run_process() -> None:
                env = {**os.environ, "HF_ENDPOINT": endpoint, "KAITO_HOME": str(work / "home")}
                started = time.perf_counter()
                subprocess.run(
                    [sys.executable, "-m", "pykaito.cli.main", "pull", f"bench/big-GGUF:{source.name}"],
                    env=env,
                    check=True,
                    capture_output=True,
                )
                process_s.append(time.perf_counter() - started)
                shutil.rmtree(work / "home")

            steps = [run_curl, run_pull, *([run_process] if args.process else [])]
            for round_ in range(args.rounds):
                for step in steps if round_ % 2 == 0 else reversed(steps):  # each goes first in turn
                    step()
                process = (
                    f"   kaito pull process {size / MIB / process_s[-1]:5.0f} MiB/s" if args.process else ""
                )
                print(
                    f"round {round_ + 1}: curl {size / MIB / curl_s[-1]:5.0f} MiB/s   "
                    f"curl+sha256sum {size / MIB / checked_s[-1]:5.0f} MiB/s   "
                    f"pull {size / MIB / pull_s[-1]:5.0f} MiB/s{process}   "
                    f"pull/curl {curl_s[-1] / pull_s[-1]:.2f}   (load {os.getloadavg()[0]:.1f})"
                )
            hub.kill()
        print(
            f"best of {args.rounds}: curl {size / MIB / min(curl_s):.0f} MiB/s, "
            f"curl+sha256sum {size / MIB / min(checked_s):.0f} MiB/s, "
            f"kaito pull {size / MIB / min(pull_s):.0f} MiB/s, pull/curl {min(curl_s) / min(pull_s):.2f}"
            + (
                f", kaito pull process {size / MIB / min(process_s):.0f} MiB/s, "
                f"process/curl {min(curl_s) / min(process_s):.2f}"
                if process_s
                else ""
            )
        )
        curl_rate = size / MIB / statistics.median(curl_s)
        checked_rate = size / MIB / statistics.median(checked_s)
        pull_rate = size / MIB / statistics.median(pull_s)
        print(
            f"median of {args.rounds}: {args.size_mib} MiB, curl {curl_rate:.0f} MiB/s, "
            f"curl+sha256sum {checked_rate:.0f} MiB/s, "
            f"kaito pull {pull_rate:.0f} MiB/s, pull/curl {pull_rate / curl_rate:.2f}, "
            f"pull/(curl+sha256sum) {pull_rate / checked_rate:.2f} (load: {os.getloadavg()[0]:.1f})"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
