"""The stateless proxy (RFC 3261 16.11): routing decisions, deterministic
Via branches and Contact tokens. Logic only: it acts through the dispatcher
it is given."""
