"""``sentinel console``: the operator web console.

Modules: :mod:`.auth` (password hashes, sessions, CSRF, roles), :mod:`.state` (the
incident, silence, containment and operator-action state folded from the Kafka topics,
followed live by one background consumer), :mod:`.actions` (what the console publishes:
acknowledge, silence, containment, re-learn, manual resolve), :mod:`.views` (chart and heat-map
helpers), :mod:`.app` (the Starlette routes) and :mod:`.cli` (the subcommand).
See docs/console.md.
"""
