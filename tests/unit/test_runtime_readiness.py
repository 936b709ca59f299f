"""common.runtime.Readiness: /readyz's answer follows what the loop says it waits for."""
import pytest

from common.runtime import Readiness

pytestmark = pytest.mark.unit


def test_not_ready_until_started():
    readiness = Readiness()
    assert not readiness
    readiness.available("start")
    assert readiness


def test_not_ready_while_any_dependency_is_away_and_ready_again_when_all_are_back():
    readiness = Readiness()
    readiness.available("start")
    readiness.wait_for("broker")
    readiness.wait_for("database")
    readiness.wait_for("broker")  # told twice, cleared once
    readiness.available("broker")
    assert not readiness and readiness.waiting == {"database"}
    readiness.available("database")
    assert readiness


def test_a_dependency_never_waited_for_changes_nothing():
    readiness = Readiness()
    readiness.available("producer")
    assert readiness.waiting == {"start"}
