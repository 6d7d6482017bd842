"""Destinations of async invocation records: file, http, function, sqs, amqp."""
