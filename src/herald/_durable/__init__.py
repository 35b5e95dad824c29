"""Durable topics: publishing, consumer groups, redelivery, ordering, replay, admin."""
