"""pykaito.bench: load generation against any OpenAI-compatible endpoint, its figures and reports.

samples   one request's timings as measured (``Sample``)
figures   the figures of one load step from its samples (TTFT, ITL, TPOT, E2E, goodput)
prompts   synthetic, shared-prefix, multi-turn and JSONL workloads
sse       the streaming client: one request, its chunks timed as they arrive
load      load shapes (a concurrency sweep, Poisson rates) and the run driver
standin   a stand-in OpenAI server with set timing, to test this package and its ceiling
report    JSON results, the HTML report with plots, PNG figures and run comparison
"""
