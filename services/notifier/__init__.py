"""notifier: terminal and milestone progress snapshots → signed webhook deliveries, retried, logged in Postgres."""
