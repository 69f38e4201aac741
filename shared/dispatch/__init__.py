"""Getting a job's message to its queue: publishing, priorities, queues, pauses, broker marks."""
