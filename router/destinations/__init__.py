"""Destinations of async invocation records: file, http, function, sqs, sns, amqp; and dead-letter queues."""
