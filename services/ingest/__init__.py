"""Ingest: accepts a batch over HTTP, stores its files, and announces it on Kafka as one BatchCreated + its chunks."""
