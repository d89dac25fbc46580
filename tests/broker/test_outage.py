"""A Redis outage is said once when it starts, summarised periodically, and once when it ends
(issue 21, item 5: "a Redis stall floods the log")."""

import logging

from broker.outage import Outage


def test_an_outage_is_one_warning_a_summary_and_one_recovery(caplog):
    now = [0.0]
    outage = Outage(logging.getLogger("jitgate.test"), "reading the outbox", summary_every_s=60, clock=lambda: now[0])
    outage.ok()  # up: says nothing
    with caplog.at_level(logging.DEBUG, logger="jitgate.test"):
        for i in range(301):  # five retries a second for a minute
            now[0] = i / 5
            outage.failed("ConnectionError")
        now[0] = 60.2
        outage.ok()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "reading the outbox failed (ConnectionError); retrying",
        "reading the outbox still failing after 60 s (301 attempts; last: ConnectionError)",
        "reading the outbox works again after 60.2 s (301 failed attempts)",
    ]
    assert not outage.down and outage.failures == 0
