"""Who may do what: digest authentication, served domains and the relay
guard, request filters and rate limits, and the receive chain that puts
them in front of the registrar and the proxy."""
