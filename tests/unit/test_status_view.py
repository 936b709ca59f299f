"""services.status_api.view: highest version wins, percent and ETA, waiters on change."""
import threading
from datetime import datetime, timedelta, timezone

import pytest

from schemas.progress import BatchProgress, BatchStatus
from services.status_api.view import ProgressView, batch_public

pytestmark = pytest.mark.unit

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=timezone.utc)


def snapshot(version: int, *, batch_id: str = "b1", total: int = 10, succeeded: int = 0, failed: int = 0,
             skipped: int = 0, status: BatchStatus = BatchStatus.PROCESSING, elapsed: float = 10.0,
             started: bool = True, finished: bool = False) -> BatchProgress:
    return BatchProgress(
        batch_id=batch_id, tenant="acme", name="invoices", status=status, total_files=total, total_chunks=1,
        succeeded=succeeded, failed=failed, skipped=skipped, created_at=T0,
        started_at=T0 if started else None, updated_at=T0 + timedelta(seconds=elapsed),
        finished_at=T0 + timedelta(seconds=elapsed) if finished else None, version=version,
    )


class TestProgressView:
    def test_keeps_the_highest_version_whatever_the_arrival_order(self):
        view = ProgressView()
        assert view.apply(snapshot(3, succeeded=3))
        assert not view.apply(snapshot(1, succeeded=1))
        assert not view.apply(snapshot(2, succeeded=2))
        assert view.get("b1").version == 3
        assert view.get("b1").succeeded == 3

    def test_an_equal_version_never_replaces_the_one_held(self):
        view = ProgressView()
        view.apply(snapshot(2, succeeded=2))
        assert not view.apply(snapshot(2, succeeded=9))
        assert view.get("b1").succeeded == 2

    def test_a_higher_version_replaces_and_batches_are_independent(self):
        view = ProgressView()
        view.apply(snapshot(1))
        view.apply(snapshot(5, batch_id="b2"))
        assert view.apply(snapshot(2, succeeded=4))
        assert (view.get("b1").version, view.get("b2").version, len(view)) == (2, 5, 2)
        assert view.get("unknown") is None

    def test_a_waiter_wakes_when_the_batch_gets_a_higher_version(self):
        view = ProgressView()
        view.apply(snapshot(1))
        waiting = threading.Event()
        seen: list[BatchProgress | None] = []

        def wait() -> None:
            waiting.set()
            seen.append(view.wait_for_change("b1", after_version=1, timeout=30))

        waiter = threading.Thread(target=wait)
        waiter.start()
        waiting.wait(5)
        view.apply(snapshot(1, batch_id="other-batch"))  # another batch's change does not satisfy it
        view.apply(snapshot(1))  # a replay does not either
        view.apply(snapshot(2, succeeded=1))
        waiter.join(10)
        assert not waiter.is_alive(), "the waiter was not woken by the new version"
        assert seen[0].version == 2

    def test_wait_returns_at_once_when_the_view_is_already_newer(self):
        view = ProgressView()
        view.apply(snapshot(4))
        assert view.wait_for_change("b1", after_version=2, timeout=30).version == 4

    def test_wait_times_out_with_the_unchanged_snapshot(self):
        view = ProgressView()
        view.apply(snapshot(4))
        assert view.wait_for_change("b1", after_version=4, timeout=0.01).version == 4
        assert view.wait_for_change("never-seen", after_version=0, timeout=0.01) is None


class TestBatchPublic:
    def test_percent_and_eta_from_the_average_rate(self):
        # 5 of 10 processed in 10 s: 0.5 files/s, 5 remaining → 10 s at updated_at.
        progress = snapshot(3, succeeded=3, failed=1, skipped=1, elapsed=10)
        public = batch_public(progress, now=progress.updated_at)
        assert public.processed_files == 5
        assert public.percent == pytest.approx(50.0)
        assert public.eta_seconds == pytest.approx(10.0)
        assert (public.version, public.status, public.name) == (3, BatchStatus.PROCESSING, "invoices")

    def test_eta_is_measured_from_acceptance_not_from_the_first_result(self):
        accepted_earlier = snapshot(3, succeeded=5, elapsed=10).model_copy(update={"started_at": T0 + timedelta(seconds=8)})
        assert batch_public(accepted_earlier, accepted_earlier.updated_at).eta_seconds == pytest.approx(10.0)

    def test_eta_counts_down_from_the_snapshot_and_never_goes_negative(self):
        progress = snapshot(3, succeeded=5, elapsed=10)
        assert batch_public(progress, progress.updated_at + timedelta(seconds=4)).eta_seconds == pytest.approx(6.0)
        assert batch_public(progress, progress.updated_at + timedelta(seconds=60)).eta_seconds == 0.0

    @pytest.mark.parametrize("progress", [
        snapshot(1, succeeded=0),  # nothing processed: no rate yet
        snapshot(1, total=0),  # total unknown until BatchCreated is persisted
        snapshot(1, succeeded=2, started=False).model_copy(update={"created_at": None}),  # no clock to rate by
        snapshot(1, succeeded=2, elapsed=0),
        snapshot(9, succeeded=8, failed=2, status=BatchStatus.COMPLETED, finished=True),
        snapshot(9, succeeded=3, status=BatchStatus.CANCELLED, finished=True),
    ], ids=["no-progress", "no-total", "no-clock", "no-elapsed-time", "completed", "cancelled"])
    def test_no_eta_when_it_cannot_be_known_or_the_batch_is_finished(self, progress):
        assert batch_public(progress, progress.updated_at).eta_seconds is None

    def test_percent_is_zero_when_the_total_is_unknown_and_100_when_all_are_processed(self):
        assert batch_public(snapshot(1, total=0), T0).percent == 0.0
        done = snapshot(7, succeeded=8, failed=2, status=BatchStatus.COMPLETED, finished=True)
        assert batch_public(done, T0).percent == 100.0
