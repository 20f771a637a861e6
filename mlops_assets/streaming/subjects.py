"""The subjects of the stream (NATS subjects and Kafka topics alike), defined once."""

# Scheduled-flight events in, one JSON object each: {"event_id", "sent_at", "flight"}.
SCHEDULED = "flights.scheduled"
# Prediction events out: the scoring result, the event's id and times, the model version.
PREDICTIONS = "flights.predictions"
# Refused events: {"event_id", "reason", "received_at"}; never the refused payload.
DEAD_LETTER = "flights.dead_letter"

# JetStream: one stream holds the three subjects (events, predictions, refusals are replayable).
STREAM = "FLIGHTS"
STREAM_SUBJECTS = ("flights.>",)
# The scorer's durable consumer (NATS) and consumer group (Kafka): its acknowledged position.
CONSUMER = "stream-scorer"
# The header NATS deduplicates published messages by (within the stream's duplicate window).
MESSAGE_ID_HEADER = "Nats-Msg-Id"
