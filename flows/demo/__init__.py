"""The demo: a generated company (`company`: customers, orders, events, contracts, staff, with
the mistakes real exports carry) and its story (`story`: weeks of follow-ups with their replies,
survey scores and later orders, one A/B variant truly better)."""
