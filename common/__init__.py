"""Plumbing shared by the services: settings, Kafka, object store, database, HTTP, logs and metrics."""
