"""The registrar (RFC 3261 10.3), its location data and the redirect
server. Logic only: bindings are kept by a store from L{sipproxy.stores}."""
