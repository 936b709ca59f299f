"""services.status_api.view and .live: highest version wins, percent and ETA, streams and long polls on change."""
import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from schemas.progress import BatchProgress, BatchStatus
from services.status_api.live import progress_stream, wait_for_newer
from services.status_api.subscriptions import ProgressSubscriptions
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

    def test_on_change_sees_each_applied_snapshot_once_in_version_order(self):
        seen: list[tuple[str, int]] = []
        view = ProgressView(on_change=lambda p: seen.append((p.batch_id, p.version)))
        for progress in (snapshot(1), snapshot(3), snapshot(2), snapshot(3), snapshot(1, batch_id="b2"), snapshot(4)):
            view.apply(progress)
        assert seen == [("b1", 1), ("b1", 3), ("b2", 1), ("b1", 4)]


class TestLiveProgress:
    """live.progress_stream / wait_for_newer over a view and its subscriptions, on one event loop."""

    @staticmethod
    def run(scenario):
        async def main():
            subscriptions = ProgressSubscriptions(asyncio.get_running_loop(), queue_size=8)
            view = ProgressView(on_change=subscriptions.publish)
            return await scenario(view, subscriptions)
        return asyncio.run(main())

    def test_a_stream_yields_every_new_version_in_order_and_ends_after_the_terminal_one(self):
        async def scenario(view, subscriptions):
            view.apply(snapshot(2, succeeded=2))
            received: list[int] = []

            async def consume():
                async for progress in progress_stream(view, subscriptions, "b1", after_version=0):
                    received.append(progress.version)

            task = asyncio.create_task(consume())
            while len(subscriptions) == 0:  # the stream has subscribed
                await asyncio.sleep(0)
            for progress in (snapshot(3), snapshot(1), snapshot(4), snapshot(5, batch_id="other"),
                             snapshot(6, succeeded=10, status=BatchStatus.COMPLETED, finished=True),
                             snapshot(7, succeeded=10, status=BatchStatus.COMPLETED, finished=True)):
                await asyncio.to_thread(view.apply, progress)  # from another thread, as the materializer does
            await asyncio.wait_for(task, 5)
            return received, len(subscriptions)

        received, left_open = self.run(scenario)
        assert received[:3] == [2, 3, 4] and received[3] == 6 and len(received) == 4
        assert left_open == 0

    def test_a_stream_resumes_after_the_version_the_client_holds(self):
        async def scenario(view, subscriptions):
            view.apply(snapshot(5, succeeded=10, status=BatchStatus.COMPLETED, finished=True))
            return [p.version async for p in progress_stream(view, subscriptions, "b1", after_version=4)]

        assert self.run(scenario) == [5]

    def test_a_stream_resumed_at_the_terminal_version_ends_at_once(self):
        async def scenario(view, subscriptions):
            view.apply(snapshot(5, succeeded=10, status=BatchStatus.COMPLETED, finished=True))
            return [p.version async for p in progress_stream(view, subscriptions, "b1", after_version=5)]

        assert self.run(scenario) == []

    def test_a_long_poll_returns_at_once_when_newer_wakes_on_change_and_times_out_unchanged(self):
        async def scenario(view, subscriptions):
            view.apply(snapshot(4))
            at_once = await wait_for_newer(view, subscriptions, "b1", after_version=2, timeout=30)
            timed_out = await wait_for_newer(view, subscriptions, "b1", after_version=4, timeout=0.05)
            never_seen = await wait_for_newer(view, subscriptions, "nope", after_version=0, timeout=0.05)
            waiter = asyncio.create_task(wait_for_newer(view, subscriptions, "b1", after_version=4, timeout=30))
            while len(subscriptions) == 0:  # the waiter has subscribed
                await asyncio.sleep(0)
            await asyncio.to_thread(view.apply, snapshot(5))
            woken = await asyncio.wait_for(waiter, 5)
            return at_once.version, timed_out.version, never_seen, woken.version

        assert self.run(scenario) == (4, 4, None, 5)


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

    def test_an_open_batch_shows_it_and_has_no_eta(self):
        progress = snapshot(3, succeeded=5, elapsed=10).model_copy(update={"sealed": False})
        public = batch_public(progress, progress.updated_at)
        assert (public.sealed, public.eta_seconds, public.percent) == (False, None, pytest.approx(50.0))

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
