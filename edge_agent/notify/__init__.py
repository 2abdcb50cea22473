"""Delivery of alarms to people: team-chat robots (WeCom, DingTalk, Feishu) and a
generic JSON webhook (issue #10, part 4). See docs/notify.md.

``config``   the ``notify:`` section of the agent's YAML
``senders``  one small async sender per service (aiohttp client), signing included
``limits``   the token bucket and the folding of a flood into one summary
``message``  the text people read (site.language)
``errors``   SendFailed, TooFast
``worker``   one task per robot: a second consumer of the outbox's alarm lane, with
             its own durable cursor

The runtime never imports MQTT, the tools or the drivers from here.
"""
