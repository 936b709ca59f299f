"""README.md's settings table is generated from the settings classes and is current."""
import pytest

from deploy.settings_table import BEGIN, END, README, readme_with_table, render_table

pytestmark = pytest.mark.unit


def test_readme_settings_table_is_current():
    readme = README.read_text()
    assert BEGIN in readme and END in readme
    assert readme_with_table(readme) == readme, "run `python -m deploy.settings_table`"


def test_every_setting_has_a_row_with_its_service_defaults():
    table = render_table()
    assert "| `OCRSTREAM_KAFKA_BOOTSTRAP_SERVERS` | `127.0.0.1:19092` | all |" in table
    assert "`8000` (ingest), `8001` (status_api)" in table, "a variable with per-service defaults names each"
    assert "tesseract \\| fast" in table, "pipes in descriptions do not break the table"
