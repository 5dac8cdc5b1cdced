"""What the two daemons, master and slave, share and the SDK must not ship.

UDP discovery (:mod:`~claud.daemon.discovery`), host:port handling
(:mod:`~claud.daemon.addresses`), flags generated from a settings class
(:mod:`~claud.daemon.settings_cli`), the TLS part of those settings
(:mod:`~claud.daemon.tls_settings`), logfmt lines (:mod:`~claud.daemon.logfmt`) and the
rate-limited log of refused requests (:mod:`~claud.daemon.refusal_log`). The wire
models and the TLS contexts the SDK uses too stay in ``claud.api`` (claud-client);
nothing in claud-client imports this package (tests/unit/test_client_ships_no_daemon.py).
"""
