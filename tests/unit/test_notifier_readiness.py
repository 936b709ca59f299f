"""services.notifier: readiness follows faust's rebalance signals and never builds the app's consumer itself."""
import asyncio

import pytest
from faust.types import TP

from services.notifier.notifier import Notifier, build_app
from services.notifier.settings import NotifierSettings

pytestmark = pytest.mark.unit


def test_readiness_follows_the_rebalance_signals_and_a_probe_leaves_the_consumer_to_the_worker(tmp_path):
    settings = NotifierSettings()
    notifier = Notifier(settings, pool=None)
    app = build_app(settings, notifier, str(tmp_path))

    assert not notifier.ready
    # The probe thread answers from its first instant. Had it built the app's consumer, the worker could start a
    # different one and faust's table manager crash on the probe's, never started (ConsumerNotStarted).
    assert app._consumer is None

    partitions = {TP(settings.topic_batch_progress, 0), TP(settings.topic_batch_progress, 1)}
    asyncio.run(app.on_partitions_assigned.send(partitions))
    assert notifier.ready
    asyncio.run(app.on_partitions_revoked.send({TP(settings.topic_batch_progress, 0)}))
    assert notifier.ready
    asyncio.run(app.on_partitions_revoked.send({TP(settings.topic_batch_progress, 1)}))
    assert not notifier.ready
