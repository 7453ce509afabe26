"""The certificate authority: models, key backends, profiles, signing, revocation."""
