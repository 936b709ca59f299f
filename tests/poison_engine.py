"""A misbehaving OCR engine for the poison tests: the top-left pixel of a page says what goes wrong.

Loaded by the worker's OCR child as OCRSTREAM_ENGINE=tests.poison_engine:build. Every other page is read
by the fast engine, so a poisoned batch's good files still complete.
"""
import ctypes
import os
import time

from PIL import Image

from services.ocr_worker.engine import FastEngine, RecognizedPage

SEGFAULT = (255, 0, 0)
HANG = (0, 255, 0)
ALLOCATE = (0, 0, 255)
RAISE = (255, 0, 255)
RAISE_UNLESS_FLAG = (0, 255, 255)  # raises until the file named by OCRSTREAM_TEST_FIXED_FLAG exists
SLOW = (1, 2, 3)  # read after half a second: a chunk that is still running when the test acts


def poison_image(marker: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> Image.Image:
    image = Image.new("RGB", size, (255, 255, 255))
    image.putpixel((0, 0), marker)
    return image


class PoisonEngine(FastEngine):
    name = "poison"

    def recognize(self, image: Image.Image) -> RecognizedPage:
        marker = image.convert("RGB").getpixel((0, 0))
        if marker == SEGFAULT:
            ctypes.string_at(0)  # reads address 0: SIGSEGV
        elif marker == HANG:
            time.sleep(3600)
        elif marker == ALLOCATE:
            hoard = []
            while True:
                hoard.append(bytearray(b"x" * (64 << 20)))  # touched pages: RSS grows 64 MiB a step
                time.sleep(0.01)
        elif marker == RAISE:
            raise RuntimeError("the engine has a bug")
        elif marker == SLOW:
            time.sleep(0.5)
        elif marker == RAISE_UNLESS_FLAG:
            if not os.path.exists(os.environ["OCRSTREAM_TEST_FIXED_FLAG"]):
                raise RuntimeError("the engine has a bug (until the flag file is made)")
        return super().recognize(image)


def build(_languages: str) -> PoisonEngine:
    return PoisonEngine()
