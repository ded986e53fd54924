"""One module per agent. Each module builds its SDK `Agent` and its `AgentSpec`; the registry
(`agents_app.registry`) lists them."""
