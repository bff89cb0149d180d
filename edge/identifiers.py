"""What text may name the things crackd publishes: MQTT topic levels, topic prefixes, client ids, display names.

One rule for every configured value that ends up in a topic or a name (`device_id`, `mqtt.topic_prefix`,
`mqtt.client_id`, `homeassistant.discovery_prefix` and `device_name`, the Sparkplug ids), checked when the config is
loaded, because the broker and paho fail such values later and without a word: a NUL in the client id or a topic
makes the broker close the connection (MQTT forbids U+0000 in its strings), a `$SYS/...` topic is acknowledged and
then dropped (`$` topics belong to the broker), a `/` or a wildcard in an id publishes somewhere no subscriber looks
(Sparkplug B forbids `/ + #` in its ids), and an over-long topic kills paho's network thread.

- every kind: printable characters only (no control characters such as NUL, tab or newline, no invisible ones);
- a topic level (one level of a topic): also no `/` (the level separator), `+` or `#` (the wildcards);
- a topic prefix (the first levels of a topic): levels joined by single `/`, none empty (no `a//b`, no leading or
  trailing `/`), no wildcards, and not starting with `$`.

Lengths are bounded per key in `edge.config` (`max_len`), well below MQTT's 65,535-byte topic limit.
"""

from __future__ import annotations

from typing import Literal

MQTT_MAX_TOPIC_BYTES = 65535  # MQTT 3.1.1 / 5: a topic is a UTF-8 string with a 2-byte length

Kind = Literal["name", "client_id", "topic_level", "topic_prefix"]

WILDCARDS = "+#"


def identifier_problem(value: str, kind: Kind) -> str | None:
    """What `value` should have been as a `kind`, worded as the `expected ...` of a config error; None when fine."""
    for position, char in enumerate(value, 1):
        if not char.isprintable():
            return (
                f"expected printable text (U+{ord(char):04X} at character {position} is a control or invisible "
                "character)"
            )
    if kind == "topic_level" and any(c in value for c in "/" + WILDCARDS):
        return "expected one MQTT topic level, without /, + or #"
    if kind == "topic_prefix":
        if value.startswith("$"):
            return (
                "expected a topic prefix not starting with $ (the broker reserves $ topics such as $SYS and drops "
                "what clients publish there)"
            )
        if any(c in value for c in WILDCARDS):
            return "expected a topic prefix without the wildcards + and #"
        if "" in value.split("/"):
            return "expected topic levels joined by single / (no empty level, no leading or trailing /)"
    return None
