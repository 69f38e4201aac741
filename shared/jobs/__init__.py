"""Jobs: the state machine, every transition, submission, events, live streams, schedules."""
