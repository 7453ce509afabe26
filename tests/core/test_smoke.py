from pki_server.core.key_backends.storages import UsePrivateKeyOptions
from pki_server.core.models import Certificate


def test_issue(intermediate, csr):
    cert = Certificate.objects.create_cert(intermediate, UsePrivateKeyOptions(), csr, subject="/CN=example.com")
    assert Certificate.objects.get(serial=cert.serial).sans == "DNS:example.com"
