"""Destinations of async invocation records (file, http, function, sqs, sns, eventbridge, s3, amqp), and
dead-letter queues."""
