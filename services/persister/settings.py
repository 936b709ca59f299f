from pydantic import Field

from common.settings import Settings, default_instance_id


class PersisterSettings(Settings):
    persister_id: str = Field(default_factory=default_instance_id)
    max_messages_per_transaction: int = Field(500, ge=1)
    persister_connections: int = Field(2, ge=1, description="Transactions a full poll (a backlog) is written in "
                                       "side by side, its partitions spread over them (each commits its own "
                                       "partitions' offsets); a poll not full is one transaction")
    poll_timeout_s: float = Field(0.1, gt=0, description="Longest wait to fill a transaction: what a lone result "
                                  "waits for company (a backlog fills one at once)")
    db_retry_backoff_s: float = Field(1.0, description="First wait after a database error; doubles up to 30 s")
    probe_host: str = "127.0.0.1"
    probe_port: int = 9102
    dlq_record_max_bytes: int = Field(16_000_000, ge=1024, description="A larger DLQ record is produced without "
                                      "the original value (kept in dlq_outbox): the DLQ topic takes 16 MiB at most")

    @property
    def db_pool_size(self) -> int:
        return self.persister_connections + 1  # the probes' and the publisher's connection beside the lanes
