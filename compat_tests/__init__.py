"""Real Kafka clients (kafka-python, confluent-kafka, kcat) against a pykbroker process."""
