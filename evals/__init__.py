"""The agents' evaluation: checked-in cases (cases.toml) run through the real run service on any
provider, judged for tools, arguments, handoffs and forbidden behaviour. See docs/evaluation.md.

Nothing imports this app; it imports chat and agents_app."""
