"""Records in: the source protocols, Kafka, decoding, event time and dead letters."""
