#!/bin/sh
# One-shot setup of Kafka for deploy/compose.yaml (profile `streaming`): the stream's topics,
# since the broker creates none by itself. Safe to run again (--if-not-exists).
set -eu
for topic in $STREAM_TOPICS; do
  /opt/kafka/bin/kafka-topics.sh --bootstrap-server "$KAFKA_BOOTSTRAP" --create --if-not-exists \
    --topic "$topic" --partitions "$STREAM_PARTITIONS" --replication-factor 1
done
echo "topics ready: $STREAM_TOPICS"
