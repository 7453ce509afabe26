"""Issue (or renew) the TLS certificate of the nginx in front of pki-server, from pki-server's own CA.

    python issue-proxy-cert.py OUT_DIR [--ca NAME] [--name NAME ...] [--renew-days DAYS]

Writes ``OUT_DIR/key.pem`` (a new EC P-256 key, mode 0600) and ``OUT_DIR/fullchain.pem`` (the
certificate and the intermediate CAs above it) for the host of ``PKI_BASE_URL`` and every
``--name``. A certificate that is there already, covers those names and is valid for more than
``--renew-days`` (default 30) is kept, so running it again changes nothing. compose.yaml's ``init``
service runs it on every ``docker compose up``; nginx reads the files when it starts or reloads.

It uses the command line only (``pki-server sign_cert``), with the same PKI_* environment as every
other pki-server command, so it needs the database and the CA's key, like a worker.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def wanted_names(extra: list[str]) -> list[str]:
    base_url = os.environ.get("PKI_BASE_URL", "")
    host = urlsplit(base_url).hostname if base_url else None
    names = [host] if host else []
    return list(dict.fromkeys(name.lower() for name in [*names, *extra]))


def current_names(cert: x509.Certificate) -> set[str]:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {name.lower() for name in sans.get_values_for_type(x509.DNSName)} | {
        str(address) for address in sans.get_values_for_type(x509.IPAddress)}


def still_good(fullchain: Path, key: Path, names: list[str], renew_days: int) -> bool:
    if not (fullchain.is_file() and key.is_file()):
        return False
    try:
        cert = x509.load_pem_x509_certificates(fullchain.read_bytes())[0]
    except ValueError:
        return False
    left = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    return left > datetime.timedelta(days=renew_days) and set(names) <= current_names(cert)


def csr_for(key: ec.EllipticCurvePrivateKey, names: list[str]) -> bytes:
    import ipaddress

    general: list[x509.GeneralName] = []
    for name in names:
        try:
            general.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            general.append(x509.DNSName(name))
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    ).add_extension(x509.SubjectAlternativeName(general), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def write_atomically(path: Path, data: bytes, mode: int) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(handle, mode)
        os.write(handle, data)
        os.close(handle)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--ca", default="intermediate", help="the signing CA (default: intermediate)")
    parser.add_argument("--name", action="append", default=[], help="another DNS name or IP address")
    parser.add_argument("--renew-days", type=int, default=30)
    args = parser.parse_args(argv)

    names = wanted_names(args.name)
    if not names:
        parser.error("no name: set PKI_BASE_URL or give --name")
    fullchain, key_file = args.out_dir / "fullchain.pem", args.out_dir / "key.pem"
    if still_good(fullchain, key_file, names, args.renew_days):
        print(f"{fullchain}: valid for {', '.join(names)} for more than {args.renew_days} days; kept.")
        return 0

    key = ec.generate_private_key(ec.SECP256R1())
    signed = subprocess.run(  # noqa: S603 (our own command, arguments as a list)
        [sys.executable, "-m", "pki_server", "sign_cert", "--ca", args.ca, "--csr", "-", "--bundle"],
        input=csr_for(key, names), capture_output=True, check=False,
    )
    if signed.returncode != 0:
        sys.stderr.write(signed.stderr.decode("utf-8", "replace"))
        return signed.returncode
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    write_atomically(key_file, key_pem, 0o600)
    write_atomically(fullchain, signed.stdout, 0o644)
    cert = x509.load_pem_x509_certificates(signed.stdout)[0]
    print(f"{fullchain}: issued by CA {args.ca} for {', '.join(names)}, serial {cert.serial_number:X}, "
          f"valid until {cert.not_valid_after_utc:%Y-%m-%d}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
