"""The fast engine, paced: every page takes OCRSTREAM_TEST_OCR_SECONDS (default 0.05 s) like a real OCR pass, so
an outage test's batch is still fetching and OCRing when a dependency is stopped (the fast engine alone would
finish first). Loaded by the worker's OCR child as OCRSTREAM_ENGINE=tests.paced_engine:build."""
import os
import time

from PIL import Image

from services.ocr_worker.engine import FastEngine, RecognizedPage


class PacedEngine(FastEngine):
    name = "paced"

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds

    def recognize(self, image: Image.Image) -> RecognizedPage:
        time.sleep(self._seconds)  # the OCR's own duration, not a synchronization
        return super().recognize(image)


def build(_languages: str) -> PacedEngine:
    return PacedEngine(float(os.environ.get("OCRSTREAM_TEST_OCR_SECONDS", "0.05")))
