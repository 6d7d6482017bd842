"""Transports of async invocations (``core/async_queue.py``): the state store (sql), RabbitMQ (amqp)."""
