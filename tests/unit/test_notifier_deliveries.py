"""services.notifier: what a snapshot owes, Standard Webhooks signatures, backoff, and the SSRF guard."""
import base64
import hashlib
import hmac
import ipaddress
import json
from datetime import datetime, timedelta, timezone

import pytest

from schemas.progress import BatchProgress, BatchStatus
from services.notifier.deliveries import next_attempt_at, owed_deliveries, signature_headers
from services.notifier.ssrf import TargetRefused, check_addresses

pytestmark = pytest.mark.unit

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=timezone.utc)
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def snapshot(version: int, processed: int, *, status=BatchStatus.PROCESSING, url="https://hooks.example.com/x"):
    return BatchProgress(batch_id="b1", tenant="acme", name="scans", status=status, total_files=20, total_chunks=2,
                         succeeded=processed, failed=0, skipped=0, created_at=T0, updated_at=T0, version=version,
                         webhook_url=url)


class TestOwedDeliveries:
    def test_a_terminal_snapshot_owes_one_delivery_whose_id_never_changes(self):
        [first] = owed_deliveries(snapshot(7, 20, status=BatchStatus.COMPLETED), milestone_percent=0)
        [again] = owed_deliveries(snapshot(8, 20, status=BatchStatus.COMPLETED), milestone_percent=0)
        assert first.event_type == "batch.completed" and first.delivery_id == again.delivery_id
        body = json.loads(first.body)
        assert body["type"] == "batch.completed" and body["data"]["percent"] == 100.0
        assert body["data"]["batch_id"] == "b1" and body["data"]["milestone"] is None

    @pytest.mark.parametrize(("processed", "milestone"), [(4, None), (5, 25), (11, 50), (19, 75)])
    def test_the_highest_milestone_passed_is_owed(self, processed, milestone):
        owed = owed_deliveries(snapshot(3, processed), milestone_percent=25)
        assert [d.milestone for d in owed] == ([milestone] if milestone else [])
        assert all(d.event_type == "batch.progress" for d in owed)

    def test_nothing_without_a_url_or_with_milestones_off(self):
        assert owed_deliveries(snapshot(3, 20, status=BatchStatus.COMPLETED, url=None), 25) == []
        assert owed_deliveries(snapshot(3, 15), milestone_percent=0) == []

    def test_an_open_batch_owes_no_milestone_only_its_terminal_event(self):
        open_batch = snapshot(3, 15).model_copy(update={"sealed": False})
        cancelled = snapshot(4, 15, status=BatchStatus.CANCELLED).model_copy(update={"sealed": False})
        assert owed_deliveries(open_batch, milestone_percent=25) == []
        assert [d.event_type for d in owed_deliveries(cancelled, milestone_percent=25)] == ["batch.cancelled"]


def test_the_signature_verifies_as_a_standard_webhooks_receiver_computes_it():
    headers = signature_headers(SECRET, "msg_1", 1700000000, '{"a":1}')
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    expected = base64.b64encode(hmac.new(key, b'msg_1.1700000000.{"a":1}', hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == f"v1,{expected}"
    assert (headers["webhook-id"], headers["webhook-timestamp"]) == ("msg_1", "1700000000")


def test_backoff_doubles_up_to_the_cap_and_stops_after_the_window():
    delays = [(next_attempt_at(T0, n, T0, first_s=5, max_interval_s=60, window_s=86400) - T0).total_seconds()
              for n in range(1, 7)]
    assert delays == [5, 10, 20, 40, 60, 60]
    late = T0 + timedelta(hours=23, minutes=59, seconds=30)
    assert next_attempt_at(T0, 30, late, first_s=5, max_interval_s=60, window_s=86400) is None


@pytest.mark.parametrize("address", ["169.254.169.254", "127.0.0.1", "10.1.2.3", "192.168.0.1", "::1", "0.0.0.0",
                                     "fe80::1", "::ffff:127.0.0.1", "100.64.0.1", "224.0.0.1"])
def test_the_ssrf_guard_refuses_non_public_addresses(address):
    with pytest.raises(TargetRefused, match="only reach public addresses"):
        check_addresses("host", [ipaddress.ip_address(address)], [])


def test_the_allowlist_lets_a_listed_network_through_and_public_addresses_always_pass():
    loopback = [ipaddress.ip_network("127.0.0.1/32")]
    check_addresses("host", [ipaddress.ip_address("127.0.0.1")], loopback)
    check_addresses("host", [ipaddress.ip_address("93.184.216.34")], [])
    with pytest.raises(TargetRefused, match="169.254.169.254, a link-local"):
        check_addresses("host", [ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("169.254.169.254")],
                        loopback)
