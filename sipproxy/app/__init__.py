"""Wiring: the C{twistd sipproxy} options, the service tree, worker
processes and the secret file. Only the twistd plugin (and the lazy names
of L{sipproxy}) import from here."""
