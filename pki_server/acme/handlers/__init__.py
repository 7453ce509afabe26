"""One module per ACME resource; every handler has the shape of :class:`base.AcmeHandler`."""
