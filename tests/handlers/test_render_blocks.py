"""Block Kit stays within Slack's limits whatever a procedure returns."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.results import Action, Fields, Image, Preformatted, Result, Table, Text
from handlers.render_blocks import render_result
from sandbox.slack_server import block_kit_errors


def test_long_table_is_cut_inline_and_uploaded_whole() -> None:
    rows = [[f"pod-{i}", "1/1", "Running"] for i in range(300)]
    message = render_result(Result("Pods", parts=[Table(["NAME", "READY", "STATUS"], rows)]), "pods", "U1", 25)
    assert block_kit_errors(message.blocks) == []
    assert "pod-299" not in str(message.blocks)
    assert b"pod-299" in message.uploads[0].content


def test_long_log_keeps_the_last_lines_inline() -> None:
    text = "\n".join(f"line {i}" for i in range(1000))
    message = render_result(Result("Logs", parts=[Preformatted(text, filename="x.log")]), "logs x", "U1", 25)
    assert "line 999" in str(message.blocks) and "line 0\n" not in str(message.blocks)
    assert message.uploads[0].filename == "x.log"
    assert block_kit_errors(message.blocks) == []


def test_mentions_in_log_lines_are_escaped() -> None:
    message = render_result(Result("Logs", parts=[Preformatted("<!channel> wake up & <@U1>")]), "logs", "U1", 25)
    assert "<!channel>" not in str(message.blocks[2])
    assert "&lt;!channel&gt;" in str(message.blocks[2])


TEXT = st.text(max_size=4000)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(
            TEXT.map(Text),
            st.lists(st.tuples(st.text(max_size=300), st.text(max_size=3000)), max_size=25).map(Fields),
            st.lists(st.lists(st.text(max_size=200), min_size=2, max_size=2), max_size=80).map(
                lambda rows: Table(["A", "B"], rows)
            ),
            TEXT.map(Preformatted),
            st.just(Image(b"\x89PNG", "g.png", "graph")),
        ),
        max_size=70,
    ),
    st.lists(st.text(min_size=1, max_size=120).map(lambda s: Action(s, "pods")), max_size=30),
    st.text(min_size=1, max_size=400),
)
def test_any_result_renders_to_valid_block_kit(parts, actions, title) -> None:  # type: ignore[no-untyped-def]
    message = render_result(Result(title, parts=parts, actions=actions), "cmd", "U1", 25)
    assert block_kit_errors(message.blocks) == []
    assert len(message.text) <= 3000
