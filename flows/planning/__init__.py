"""Planning: playbook declarations, the calendar, and today's follow-ups."""
