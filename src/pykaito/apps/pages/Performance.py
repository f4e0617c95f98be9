"""The web app's Performance page: the connected endpoint's latest benchmark, and a short new one."""

from __future__ import annotations

import streamlit as st

from pykaito.apps.bench_runs import ShortRun, latest, run_short
from pykaito.bench.load import RunResult
from pykaito.bench.plots import figures
from pykaito.client.endpoint import default_endpoint
from pykaito.errors import PykaitoError


def table(result: RunResult) -> list[dict[str, object]]:
    rows = []
    for step in result.steps:
        f = step.figures
        rows.append(
            {
                "load": step.step.label,
                "ok": f.completed,
                "failed": f.failed,
                "output tok/s": round(f.output_throughput, 1),
                "TTFT p50 ms": round(f.ttft.p50 * 1000, 1),
                "TTFT p99 ms": round(f.ttft.p99 * 1000, 1),
                "ITL p50 ms": round(f.itl.p50 * 1000, 1),
                "tok/s per stream": round(f.per_stream_tokens_per_s, 1),
            }
        )
    return rows


def page() -> None:
    st.title("Performance")
    endpoint = str(st.session_state.get("endpoint") or default_endpoint())
    st.caption(f"Endpoint: {endpoint} · the figures are defined as in vLLM's serving benchmark")
    with st.form("short-benchmark"):
        picked = st.multiselect("Concurrency", [1, 2, 4, 8, 16, 32], default=[1, 2, 4])
        cols = st.columns(3)
        per_step = cols[0].number_input("Requests per step", 1, 1000, 8)
        input_tokens = cols[1].number_input("Input tokens", 1, 32768, 128)
        output_tokens = cols[2].number_input("Output tokens", 1, 8192, 64)
        start = st.form_submit_button("Run a short benchmark", type="primary")
    if start:
        if not picked:
            st.error("Pick at least one concurrency.")
        else:
            form = ShortRun(tuple(sorted(picked)), int(per_step), int(input_tokens), int(output_tokens))
            bar = st.progress(0.0, text="starting…")

            def show(fraction: float, text: str) -> None:
                bar.progress(fraction, text=text)

            try:
                run_short(endpoint, form, show)
                bar.progress(1.0, text="done")
            except PykaitoError as exc:
                st.error(str(exc))
    try:
        result = latest(endpoint)
    except PykaitoError as exc:
        st.error(str(exc))
        return
    if result is None:
        st.info("No benchmark of this endpoint yet: run a short one above, or `kaito bench` from a terminal.")
        return
    st.subheader(f"Latest run · {result.meta.get('finished', '')}")
    st.caption(str(result.meta.get("workload", "")))
    st.dataframe(table(result), hide_index=True)
    for name, fig in figures([result]).items():
        st.pyplot(fig, clear_figure=True)
        st.caption(name)


page()
