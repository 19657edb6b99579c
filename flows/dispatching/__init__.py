"""Dispatch: render the day's planned follow-ups, hand them to their channels, record every
outcome in the ledger, and escalate what went unanswered."""
