"""End to end over real processes: upload → chunk events → Tesseract → exactly-once rows → status API."""
import statistics

import pytest

from demo.processes import client_for, running_services
from demo.sample_batch import line_error_rates, render_sample_batch
from tests.helpers import distinctive_phrase, file_row_counts

pytestmark = pytest.mark.e2e


def test_a_batch_flows_through_all_four_services(settings, isolated_env, tmp_path):
    samples = render_sample_batch(tmp_path / "batch", images=20, pdf_pages=3, seed=11)
    assert len(samples) == 21
    with running_services(isolated_env, tmp_path / "logs") as services, \
            client_for(services) as client:
        accepted = client.submit([s.path for s in samples], name="e2e", chunk_size=4)
        assert accepted["total_files"] == 21 and accepted["total_chunks"] == 6
        final = client.wait(accepted["batch_id"], timeout=600)

        rows = file_row_counts(settings, accepted["batch_id"])
        assert set(rows["by_name"]) == {s.path.name for s in samples}
        assert set(rows["by_name"].values()) == {1}, "every file has exactly one row"
        assert rows["broken_word_sets"] == [] and rows["orphan_pages"] == 0

        assert final["status"] == "completed"
        assert final["total_files"] == 21 and final["succeeded"] == rows["by_status"].get("ok", 0) == 21
        assert final["failed"] == rows["by_status"].get("failed", 0) == 0
        assert final["percent"] == 100

        results = {r["original_name"]: r for r in client.results(accepted["batch_id"])}
        assert len(results) == 21
        cers = []
        for sample in samples:
            result = results[sample.path.name]
            assert result["status"] == "ok"
            assert result["page_count"] == len(sample.pages)
            for expected_page, page in zip(sample.pages, result["pages"]):
                cers.extend(line_error_rates(expected_page, page["text"]))
        print(f"per-line CER over {len(cers)} lines: mean {statistics.mean(cers):.3%}, worst {max(cers):.3%}")
        assert statistics.mean(cers) < 0.10

        target = samples[5]
        hits = client.search(distinctive_phrase(target.lines[0]), k=3)
        assert hits and hits[0]["original_name"] == target.path.name
