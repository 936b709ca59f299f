"""The idle claim a worker commits as offset metadata, and how another worker reads it back (handover.py)."""
from services.ocr_worker.handover import _claimed, idle_claim


def test_an_idle_claim_names_the_workers_partitions_in_order():
    assert idle_claim([5, 0, 3]) == "idle:0,3,5"
    assert _claimed(idle_claim([5, 0, 3])) == {0, 3, 5}


def test_a_claim_that_is_not_one_names_no_partition():
    assert _claimed("idle:") == frozenset()
    assert _claimed("idle:1,x") == frozenset()
