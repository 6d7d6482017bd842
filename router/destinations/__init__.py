"""Destinations of async invocation records (file, http, function, sqs, sns, eventbridge, amqp), and
dead-letter queues."""
