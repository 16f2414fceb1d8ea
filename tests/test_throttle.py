"""The redemption throttle (govern.throttle): failures count, per address and in all; a valid enrollment
code gets through whatever others sent (the second security review locked enrollment with junk from ten
addresses)."""

from __future__ import annotations

import pytest

from govern.throttle import Throttle, TooManyAttempts


class Refused(Exception):
    pass


def fail() -> None:
    raise Refused("not a valid enrollment code")


def test_junk_from_many_addresses_never_keeps_a_valid_code_out() -> None:
    now = [0.0]
    throttle = Throttle(per_client=20, total=200, window=60.0, clock=lambda: now[0])
    answers = []
    for address in (f"127.0.0.{i}" for i in range(2, 14)):
        for _ in range(20):
            try:
                throttle.run(address, "redeem an enrollment code", fail, (Refused,))
            except (Refused, TooManyAttempts) as error:
                answers.append(type(error).__name__)

    assert answers.count("Refused") == 200 and answers.count("TooManyAttempts") == 40, "failures over 200 are 429"
    assert throttle.run("127.0.0.1", "redeem an enrollment code", lambda: "a token", (Refused,)) == "a token"


def test_an_address_over_its_limit_is_refused_before_its_attempt_runs_and_again_after_the_window() -> None:
    now = [0.0]
    throttle = Throttle(per_client=3, total=200, window=60.0, clock=lambda: now[0])
    for _ in range(3):
        with pytest.raises(Refused):
            throttle.run("10.0.0.1", "redeem an enrollment code", fail, (Refused,))
    ran = []

    with pytest.raises(TooManyAttempts, match="from this address .3 in 60 s.: try again in 61 s") as refused:
        throttle.run("10.0.0.1", "redeem an enrollment code", lambda: ran.append(1), (Refused,))

    assert ran == [] and refused.value.retry_after == 61
    assert throttle.run("10.0.0.2", "redeem an enrollment code", lambda: "ok", (Refused,)) == "ok"
    now[0] = 61.0
    assert throttle.run("10.0.0.1", "redeem an enrollment code", lambda: "ok", (Refused,)) == "ok"


def test_successes_count_nothing() -> None:
    throttle = Throttle(per_client=2, total=2, window=60.0, clock=lambda: 0.0)
    assert [throttle.run("10.0.0.1", "redeem", lambda i=i: i, (Refused,)) for i in range(10)] == list(range(10))
