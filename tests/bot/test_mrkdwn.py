"""Entities in and out of Slack mrkdwn."""

from __future__ import annotations

from bot.mrkdwn import decode_entities, escape_mrkdwn


def test_decoding_undoes_the_entities_of_escaping() -> None:
    typed = "rate(x[5m]) > 0.1 && <!channel>"
    assert decode_entities(escape_mrkdwn(typed, "markup")) == typed


def test_an_escaped_entity_decodes_to_text_not_markup() -> None:
    assert decode_entities("&amp;lt;!channel&amp;gt;") == "&lt;!channel&gt;"
