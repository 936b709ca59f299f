"""The real PostgreSQL + pgvector: migrations, and a k-NN query answered through the HNSW index."""
import numpy as np
import pytest

from common.db import apply_migrations, build_pool

pytestmark = pytest.mark.integration


def test_migrations_are_idempotent(settings):
    assert apply_migrations(settings) == []  # the fixture applied them


def test_knn_query_uses_the_hnsw_index(settings):
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(300, 512)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with build_pool(settings, name="test") as pool, pool.connection() as conn:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO pages (file_id, page_number, batch_id, tenant, width, height, text, mean_confidence,"
                " embedding) VALUES (%s, 1, 'b', 't', 1, 1, %s, 90, %s)",
                [(f"f{i}", f"page {i}", v) for i, v in enumerate(vectors)],
            )
            cur.execute("ANALYZE pages")
            cur.execute("SET enable_seqscan = off")  # 300 rows: make the planner show the index path it has
            query = vectors[42] + 0.01
            plan = "\n".join(r[0] for r in cur.execute(
                "EXPLAIN SELECT file_id FROM pages ORDER BY embedding <=> %s LIMIT 5", (query,)))
            assert "pages_embedding_hnsw" in plan, plan
            nearest = cur.execute("SELECT file_id FROM pages ORDER BY embedding <=> %s LIMIT 5", (query,)).fetchall()
            assert nearest[0][0] == "f42"
