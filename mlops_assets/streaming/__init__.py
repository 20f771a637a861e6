"""Streaming inference: scheduled-flight events scored as they happen (docs/streaming.md).

The stream scorer (``scorer``) validates each event with the request contract the Bento uses,
scores micro-batches with the champion's published scoring bundle, writes the predictions to
the lake's stream sink and publishes them. The same handler runs on NATS JetStream (locally)
and on Kafka (production), chosen by the broker URL (``brokers``). Never imported by the code
location.
"""
