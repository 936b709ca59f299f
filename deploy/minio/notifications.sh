#!/bin/sh
# MinIO bucket-notification example (run once by compose's minio-setup): every object created in the `incoming`
# bucket is POSTed, as the standard S3 event JSON (Records[]), to the webhook target OCRSTREAM that the minio
# service's MINIO_NOTIFY_WEBHOOK_*_OCRSTREAM variables define (ingest's /v1/s3-events).
# A Kafka target works the same way: MINIO_NOTIFY_KAFKA_ENABLE_OCRSTREAM=on,
# MINIO_NOTIFY_KAFKA_BROKERS_OCRSTREAM=kafka:9092, MINIO_NOTIFY_KAFKA_TOPIC_OCRSTREAM=s3.events, then
# `mc event add local/incoming arn:minio:sqs::OCRSTREAM:kafka --event put`.
set -eu
mc mb --ignore-existing local/incoming
# Idempotent: a rule that already exists is left as it is.
mc event list local/incoming arn:minio:sqs::OCRSTREAM:webhook | grep -q ObjectCreated \
  || mc event add local/incoming arn:minio:sqs::OCRSTREAM:webhook --event put
mc event list local/incoming
