"""The continuous-batching rules and the stop-string filter, without a model."""

from __future__ import annotations

import itertools
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pykaito.errors import QueueFullError
from pykaito.runtime.scheduler import Scheduler, SequenceState, common_prefix
from pykaito.runtime.text import StopFilter, TextStream


def make(
    max_running: int = 2, max_waiting: int = 2, prompt_chunk: int = 8, batch: int = 16
) -> Scheduler[None]:
    return Scheduler(
        max_running=max_running, max_waiting=max_waiting, prompt_chunk=prompt_chunk, batch_size=batch
    )


def seq(n_prompt: int, name: str = "r") -> SequenceState[None]:
    return SequenceState(name, list(range(100, 100 + n_prompt)), None)


def test_queue_full_raises_at_once() -> None:
    s = make(max_running=2, max_waiting=2)
    for _ in range(4):  # two will take the free slots, two wait
        s.submit(seq(3))
    with pytest.raises(QueueFullError, match="max_waiting=2"):
        s.submit(seq(3))
    s.admit(lambda _: None)
    assert (s.running, s.waiting) == (2, 2)
    with pytest.raises(QueueFullError):
        s.submit(seq(3))


def test_admit_fills_lowest_free_slots_and_keeps_the_rest_waiting() -> None:
    s = make(max_running=2, max_waiting=4)
    seqs = [seq(3, f"r{i}") for i in range(3)]
    for q in seqs:
        s.submit(q)
    admitted = s.admit(lambda _: None)
    assert [q.slot for q in admitted] == [0, 1]
    assert (s.running, s.waiting) == (2, 1)


def test_a_released_slot_is_trimmed_for_its_next_sequence() -> None:
    s = make(max_running=2, max_waiting=4)
    a, b, c = seq(3, "a"), seq(3, "b"), SequenceState("c", [7, 8, 9], None)
    for q in (a, b, c):
        s.submit(q)
    s.admit(lambda _: None)
    s.finish(a)
    assert s.running == 1
    released: list[str] = []
    prepared: list[tuple[str, int, int]] = []
    admitted = s.admit(
        lambda q: released.append(q.request_id),
        None,
        lambda q: prepared.append((q.request_id, q.slot, q.n_past)),
    )
    assert released == ["a"]
    assert admitted == [c]
    # nothing of c's prompt is cached in slot 0, so all of the slot's cache goes
    assert prepared == [("c", 0, 0)]


def finish_after(s: Scheduler[None], q: SequenceState[None], generated: list[int]) -> None:
    """Run ``q`` through its prompt and ``generated`` (the last one sampled, not fed back), then finish it."""
    q.n_past = len(q.prompt)
    for token in generated[:-1]:
        q.feed(token)
        q.n_past += 1
    q.feed(generated[-1])
    s.finish(q)


def test_a_new_prompt_starts_after_the_prefix_its_slot_has_cached() -> None:
    s = make(max_running=2, max_waiting=4)
    first = SequenceState("first", [1, 2, 3, 4], None)
    s.submit(first)
    s.admit(lambda _: None)
    finish_after(s, first, [50, 51, 52])  # the KV cache holds 1 2 3 4 50 51
    turn2 = SequenceState("turn2", [1, 2, 3, 4, 50, 51, 60, 61], None)
    s.submit(turn2)
    prepared: list[int] = []
    s.admit(lambda _: None, None, lambda q: prepared.append(q.n_past))
    assert (turn2.slot, turn2.n_past, turn2.cached) == (0, 6, 6)
    assert prepared == [6]
    # only the new tokens are planned
    [entry] = s.plan()
    assert (list(entry.tokens), entry.start_pos, entry.wants_logits) == ([60, 61], 6, True)


@pytest.mark.parametrize(
    ("prefix_cache", "reused"),
    [
        # the last prompt token is always computed: its logits give the first new token
        pytest.param(True, 3, id="on"),
        pytest.param(False, 0, id="off"),
    ],
)
def test_the_same_prompt_again(prefix_cache: bool, reused: int) -> None:
    s = Scheduler[None](
        max_running=2, max_waiting=2, prompt_chunk=8, batch_size=16, prefix_cache=prefix_cache
    )
    first = SequenceState("first", [1, 2, 3, 4], None)
    s.submit(first)
    s.admit(lambda _: None)
    finish_after(s, first, [9])
    again = SequenceState("again", [1, 2, 3, 4], None)
    s.submit(again)
    s.admit(lambda _: None)
    assert (again.slot, again.n_past, again.cached) == (0, reused, reused)
    [entry] = s.plan()
    assert (list(entry.tokens), entry.wants_logits) == ([1, 2, 3, 4][reused:], True)


def test_a_sequence_cancelled_mid_prompt_caches_what_was_computed() -> None:
    s = make()
    a = SequenceState("a", list(range(10, 30)), None)
    s.submit(a)
    s.admit(lambda _: None)
    a.n_past = 5  # one chunk of the prompt went through
    s.cancel(a)
    s.admit(lambda _: None)
    assert s.cached_tokens(0) == [10, 11, 12, 13, 14]
    b = SequenceState("b", list(range(10, 30)), None)
    s.submit(b)
    s.admit(lambda _: None)
    assert b.n_past == 5


def test_the_lowest_free_slot_wins_unless_another_caches_much_more() -> None:
    s = make(max_running=3, max_waiting=3)
    prompts = {"x": [1, 2] + [0] * 30, "y": [1, 2, 3] + [5] * 30, "z": [1] + [6] * 30}
    seqs = {k: SequenceState(k, v, None) for k, v in prompts.items()}
    for q in seqs.values():
        s.submit(q)
    s.admit(lambda _: None)
    for q in seqs.values():
        finish_after(s, q, [99])
    s.admit(lambda _: None)
    assert [s.cached_tokens(slot)[:3] for slot in range(3)] == [[1, 2, 0], [1, 2, 3], [1, 6, 6]]
    # slot 1 shares 3 tokens, slot 0 (the lowest) 2: not worth a hole, slot 0 it is
    near = SequenceState("near", [1, 2, 3, 7, 7], None)
    s.submit(near)
    s.admit(lambda _: None)
    assert (near.slot, near.n_past) == (0, 2)
    # slot 2 shares 31 tokens, 30 more than slot 1 (now the lowest free): worth it
    far = SequenceState("far", [1] + [6] * 30 + [8], None)
    s.submit(far)
    s.admit(lambda _: None)
    assert (far.slot, far.n_past) == (2, 31)


@given(
    st.lists(st.integers(0, 3), max_size=40),
    st.lists(st.integers(0, 3), max_size=40),
    st.integers(0, 45),
)
def test_common_prefix_matches_a_plain_scan(a: list[int], b: list[int], limit: int) -> None:
    limit = min(limit, len(a), len(b))  # callers never ask past either list
    expected = 0
    while expected < limit and a[expected] == b[expected]:
        expected += 1
    assert common_prefix(a, b, limit) == expected


def three_running() -> tuple[Scheduler[None], list[SequenceState[None]]]:
    s = make(max_running=3, max_waiting=3)
    seqs = [seq(2, name) for name in "abc"]
    for q in seqs:
        s.submit(q)
    s.admit(lambda _: None)
    return s, seqs


def test_a_hole_is_closed_by_moving_the_highest_slot_down() -> None:
    s, (a, b, c) = three_running()
    s.finish(b)
    moves: list[tuple[str, int, int]] = []
    s.admit(lambda _: None, lambda q, slot: moves.append((q.request_id, q.slot, slot)))
    assert moves == [("c", 2, 1)]
    assert (a.slot, b.slot, c.slot) == (0, -1, 1)
    # the move overwrote slot 1's cache and emptied slot 2's
    assert s.cached_tokens(1) == [] and s.cached_tokens(2) == []
    # contiguous now: nothing more to move, and the freed top slot is the one handed out next
    s.admit(lambda _: None, lambda q, slot: moves.append((q.request_id, q.slot, slot)))
    assert len(moves) == 1
    d = seq(2, "d")
    s.submit(d)
    s.admit(lambda _: None)
    assert d.slot == 2


def test_a_sequence_cancelled_while_admit_releases_others_is_no_hole_yet() -> None:
    # A client that leaves cancels its sequence from the event loop thread at any time, also
    # between admit's release step and its admission step: its slot is then neither running nor
    # free, and the gap it leaves must wait for the next admit instead of failing this one.
    s = make(max_running=4, max_waiting=4)
    a, b, c, d = (seq(2, name) for name in "abcd")
    for q in (a, b, c, d):
        s.submit(q)
    s.admit(lambda _: None)
    s.finish(d)
    moves: list[tuple[str, int]] = []
    s.admit(lambda _: s.cancel(b), lambda q, slot: moves.append((q.request_id, slot)))
    assert moves == []  # slot 1 is not free yet
    assert s.running == 2
    s.admit(lambda _: None, lambda q, slot: moves.append((q.request_id, slot)))
    assert moves == [("c", 1)]  # b's slot is free now: the hole is closed
    assert (a.slot, c.slot) == (0, 1)


def test_contiguous_running_slots_are_not_moved() -> None:
    s, (a, b, c) = three_running()
    s.finish(a)  # 1 and 2 still run side by side: one micro-batch already
    moves: list[str] = []
    s.admit(lambda _: None, lambda q, slot: moves.append(q.request_id))
    assert moves == []
    assert (b.slot, c.slot) == (1, 2)


def test_cancel_running_is_visible_at_once_and_frees_the_slot_later() -> None:
    s = make()
    a = seq(3)
    s.submit(a)
    s.admit(lambda _: None)
    assert s.cancel(a)
    assert s.running == 0
    assert not s.cancel(a)
    released: list[SequenceState[None]] = []
    s.admit(released.append)
    assert released == [a]
    assert a.slot == -1


def test_cancel_waiting_removes_it_from_the_queue() -> None:
    s = make(max_running=1)
    a, b = seq(2, "a"), seq(2, "b")
    s.submit(a)
    s.admit(lambda _: None)
    s.submit(b)
    assert s.cancel(b)
    assert s.waiting == 0
    assert s.admit(lambda _: None) == []


def test_plan_gives_every_decoding_sequence_one_token_and_chunks_prompts() -> None:
    s = make(max_running=3, max_waiting=3, prompt_chunk=8, batch=64)
    decoding, long, short = seq(4, "d"), seq(20, "long"), seq(5, "short")
    for q in (decoding, long, short):
        s.submit(q)
    s.admit(lambda _: None)
    decoding.n_past, decoding.next_token = 4, 7
    step = s.plan()
    by_name = {e.seq.request_id: e for e in step}
    assert list(by_name["d"].tokens) == [7]
    assert by_name["d"].start_pos == 4
    assert by_name["d"].wants_logits
    # the shorter prompt goes first and finishes; the long one gets the rest of the chunk
    assert len(by_name["short"].tokens) == 5
    assert by_name["short"].wants_logits
    assert list(by_name["long"].tokens) == list(range(100, 103))
    assert not by_name["long"].wants_logits
    assert sum(len(e.tokens) for e in step if e.seq is not decoding) == 8
    assert [e.seq.slot for e in step] == sorted(e.seq.slot for e in step)


def test_long_prompt_resumes_where_it_stopped() -> None:
    s = make(max_running=1, prompt_chunk=8, batch=16)
    a = seq(20)
    s.submit(a)
    s.admit(lambda _: None)
    positions = []
    while a.prompt_left:
        (entry,) = s.plan()
        positions.append((entry.start_pos, len(entry.tokens), entry.wants_logits))
        a.n_past += len(entry.tokens)
    assert positions == [(0, 8, False), (8, 8, False), (16, 4, True)]


def test_submit_from_many_threads_respects_the_bound() -> None:
    s = make(max_running=1, max_waiting=9)
    errors: list[Exception] = []

    def worker() -> None:
        for _ in range(5):
            try:
                s.submit(seq(1))
            except QueueFullError as exc:
                errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert s.waiting == 10
    assert len(errors) == 10


@pytest.mark.parametrize(
    ("pieces", "stops", "emitted", "stopped"),
    [
        pytest.param(["Hello", " world"], [], "Hello world", False, id="no-stops"),
        pytest.param(["Hel", "lo ST", "OP there"], ["STOP"], "Hello ", True, id="split-stop"),
        pytest.param(["a", "b", "c"], ["bd"], "abc", False, id="partial-match-released"),
        pytest.param(["xx<", "|end"], ["<|end|>"], "xx", False, id="held-at-end"),
        pytest.param(["one\n\ntwo"], ["\n\n", "one"], "", True, id="earliest-stop-wins"),
    ],
)
def test_stop_filter(pieces: list[str], stops: list[str], emitted: str, stopped: bool) -> None:
    f = StopFilter(stops)
    out = ""
    hit = False
    for p in pieces:
        text, hit = f.push(p)
        out += text
        if hit:
            break
    assert out == emitted
    assert hit is stopped


def test_text_stream_reassembles_split_utf8() -> None:
    ts = TextStream(())
    data = "é€".encode()
    texts = [ts.push(data[i : i + 1])[0] for i in range(len(data))]
    assert "".join(texts) == "é€"
    assert texts[0] == ""


@given(st.text(max_size=40), st.lists(st.integers(min_value=0, max_value=40), max_size=6))
def test_stop_filter_never_leaks_a_stop_string(text: str, cuts: list[int]) -> None:
    stop = "END"
    f = StopFilter([stop])
    points = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    out = ""
    hit = False
    for a, b in itertools.pairwise(points):
        piece, hit = f.push(text[a:b])
        out += piece
        if hit:
            break
    if not hit:
        out += f.flush()
    expected = text.split(stop)[0]
    assert out == expected
    assert hit == (stop in text)


def test_a_new_conversation_takes_an_empty_slot_and_leaves_the_cached_one() -> None:
    s = make(max_running=3, max_waiting=3)
    system = [1, 2, 3, 4]  # a system prompt every conversation starts with
    first = SequenceState("first", system + list(range(100, 160)), None)
    s.submit(first)
    s.admit(lambda _: None)
    finish_after(s, first, [7, 8])
    s.admit(lambda _: None)
    other = SequenceState("other", system + list(range(200, 260)), None)
    s.submit(other)
    s.admit(lambda _: None)
    # slot 0 shares only the system prompt and would lose 61 cached tokens: slot 1 is empty
    assert (other.slot, other.n_past) == (1, 0)
    finish_after(s, other, [9])
    s.admit(lambda _: None)
    again = SequenceState("again", system + list(range(100, 160)) + [7, 30], None)
    s.submit(again)
    s.admit(lambda _: None)
    assert (again.slot, again.n_past) == (0, 65)  # the first conversation's next turn finds its cache
