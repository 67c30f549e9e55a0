"""When the driver prepares a trial ahead of a free slot (hpo.run.ask_ahead)."""

from __future__ import annotations

from hpo.run.ask_ahead import AskAhead


def test_nothing_is_prepared_before_both_an_ask_and_a_run_are_measured():
    policy = AskAhead()
    assert not policy.wanted()
    policy.asked(5.0)
    assert not policy.wanted()  # no trial has ended: its time is unknown
    policy.ran(10.0)
    assert policy.wanted()


def test_prepared_where_the_median_ask_is_at_least_the_share_of_the_median_run():
    policy = AskAhead(share=0.02, window=3)
    for run in (10.0, 10.0, 10.0):
        policy.ran(run)
    policy.asked(0.1)
    assert not policy.wanted()  # 1 % of a trial's time
    policy.asked(0.3)
    policy.asked(0.2)
    assert policy.wanted()  # median 0.2 s: 2 %
    for run in (1000.0, 1000.0):  # the window keeps the 3 newest: runs grew long
        policy.ran(run)
    assert not policy.wanted()


def test_always_prepares_whatever_the_asks_take():
    policy = AskAhead.always()
    assert policy.wanted()
    policy.asked(0.0)
    policy.ran(1e6)
    assert policy.wanted()
