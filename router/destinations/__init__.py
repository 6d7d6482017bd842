"""Destinations of async invocation records: file, http, function (sqs and amqp later)."""
