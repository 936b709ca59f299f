-- Issue 21: GET /v1/batches lists a tenant's batches newest first, paged by (created_at, batch_id).
CREATE INDEX batches_by_tenant_created ON batches (tenant, created_at DESC, batch_id DESC);
