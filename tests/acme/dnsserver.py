"""A small authoritative DNS server for tests: UDP and TCP on 127.0.0.1, answers from a dict the test controls.

Usage::

    async with DNSServer() as dns_server:
        dns_server.records[("a.example", "A")] = ["127.0.0.1"]
        dns_server.records[("a.example", "AAAA")] = ["::1"]
        dns_server.records[("_acme-challenge.a.example", "TXT")] = ["value", ("split ", "value")]
        dns_server.records[("www.a.example", "CNAME")] = ["a.example"]
        dns_server.records[("a.example", "CAA")] = ['0 issue "ca.example"']
        config = ValidationConfig(resolvers=(dns_server.address,))

``records`` maps (name, type) to a list of values. Names are case-insensitive, with or without the final dot; the
type is a name ("A") or a ``dns.rdatatype`` value. Values are in zone-file syntax (``dns.rdata.from_text``), except
TXT values: a ``str`` is one string, a tuple of ``str`` is one record of several strings (each at most 255 bytes).

Answers: the records of the name and type; a CNAME at the name (for any other type) is answered with the CNAME and
the target's records, followed within ``records`` as a resolver would; a name with records of other types only
gets an empty NOERROR answer (NODATA); any other name NXDOMAIN. ``rcodes[name] = dns.rcode.SERVFAIL`` forces an
rcode for a name, ``rcodes[(name, "AAAA")]`` for one type of it; ``silent.add(name)`` (or ``(name, type)``) makes
the server never answer (a timeout); ``delays[name] = 0.3`` (or ``[(name, type)]``) holds its UDP answers back that many
seconds. ``queries`` lists every
(name, type) asked, in order, so a test can see that lookups really reached the server. UDP answers that do not
fit (512 bytes, or the client's EDNS size) are truncated, and the client retries over TCP.

``DNSServer(records_file=path)`` also answers from a JSON file that another process may write (certbot's
``--manual-auth-hook``, say): ``{"<name>": {"<TYPE>": [value, ...]}}``, values as in ``records`` (a list of strings
for a multi-string TXT record). The file is read again whenever its modification time or size changes; a missing
file is empty, and one that does not parse keeps the last good contents (write it to a temporary file and rename
it over the old one). Its records are added to those of ``records``. :func:`update_txt` writes it that way, and
running this file as a script does the same for an ACME client's DNS hook::

    python tests/acme/dnsserver.py RECORDS_FILE ACTION NAME VALUE

where ACTION ``auth`` or ``present`` adds the TXT value at NAME and ``cleanup`` removes it (certbot's and lego's
words); each call is noted in ``dns-hook-calls.log`` beside the records file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset

RecordValue = str | tuple[str, ...]

_MAX_CNAME_CHAIN = 8


def _name_key(name: str | dns.name.Name) -> str:
    text = name.to_text() if isinstance(name, dns.name.Name) else name
    return text.rstrip(".").lower()


def _type_key(rdtype: str | int) -> str:
    return dns.rdatatype.to_text(dns.rdatatype.RdataType.make(rdtype))


def _selector_key(selector: str | tuple[str, str | int]) -> str | tuple[str, str]:
    if isinstance(selector, tuple):
        return _name_key(selector[0]), _type_key(selector[1])
    return _name_key(selector)


class DNSServer:
    """See the module docstring. ``start()`` binds an ephemeral port on ``host``; ``address`` is (host, port)."""

    def __init__(self, host: str = "127.0.0.1", ttl: int = 60, *, records_file: str | Path | None = None) -> None:
        self.host = host
        self.records_file = Path(records_file) if records_file is not None else None
        self._file_stamp: tuple[int, int] | None = None
        self._file_records: dict[tuple[str, str], list[RecordValue]] = {}
        self.port = 0
        self.ttl = ttl
        self.records: dict[tuple[str, str | int], list[RecordValue]] = {}
        self.rcodes: dict[str | tuple[str, str | int], int] = {}
        self.silent: set[str | tuple[str, str | int]] = set()
        self.delays: dict[str | tuple[str, str | int], float] = {}
        self.queries: list[tuple[str, str]] = []
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tcp_writers: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> tuple[str, int]:
        """(host, port), as ``ValidationConfig.resolvers`` wants it."""
        return self.host, self.port

    async def start(self) -> DNSServer:
        loop = asyncio.get_running_loop()
        for _attempt in range(20):  # the UDP port picked may be taken for TCP; try another
            transport, _ = await loop.create_datagram_endpoint(lambda: _UDPProtocol(self), local_addr=(self.host, 0))
            port = transport.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, self.host, port)
            except OSError:
                transport.close()
                continue
            self._udp, self.port = transport, port
            return self
        raise RuntimeError(f"no port on {self.host} is free for both UDP and TCP")

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            for writer in list(self._tcp_writers):
                writer.transport.abort()
            await asyncio.wait_for(self._tcp.wait_closed(), 5)
            self._tcp = None

    async def __aenter__(self) -> DNSServer:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # --- answering --------------------------------------------------------------------------------------------------

    def answer(self, wire: bytes) -> dns.message.Message | None:
        """The response to a query in wire format, or None when nothing is to be sent (garbage, a silent name)."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        if len(query.question) != 1:
            response = dns.message.make_response(query)
            response.set_rcode(dns.rcode.FORMERR)
            return response
        question = query.question[0]
        name, rdtype = _name_key(question.name), _type_key(question.rdtype)
        self.queries.append((name, rdtype))
        if {name, (name, rdtype)} & {_selector_key(selector) for selector in self.silent}:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA | dns.flags.RA
        forced = {_selector_key(selector): rcode for selector, rcode in self.rcodes.items()}
        rcode = forced.get((name, rdtype), forced.get(name))
        if rcode is not None:
            response.set_rcode(dns.rcode.Rcode.make(rcode))
            return response
        table = self._table()
        qname = question.name
        for _step in range(_MAX_CNAME_CHAIN):
            key = _name_key(qname)
            cnames = table.get((key, "CNAME"))
            if cnames and rdtype != "CNAME":
                target = dns.name.from_text(str(cnames[0]).rstrip(".") + ".")
                response.answer.append(self._rrset(qname, "CNAME", [target.to_text()]))
                qname = target
                continue
            values = table.get((key, rdtype))
            if values:
                response.answer.append(self._rrset(qname, rdtype, values))
            elif not any(name_key == key for name_key, _ in table):
                response.set_rcode(dns.rcode.NXDOMAIN)
            break
        return response

    def _table(self) -> dict[tuple[str, str], list[RecordValue]]:
        table = {(_name_key(name), _type_key(rdtype)): values for (name, rdtype), values in self.records.items()}
        for key, values in self._read_records_file().items():
            table[key] = [*table.get(key, []), *values]
        return table

    def _read_records_file(self) -> dict[tuple[str, str], list[RecordValue]]:
        """The records of ``records_file`` (see the module docstring), read again when the file changed."""
        if self.records_file is None:
            return {}
        try:
            stat = os.stat(self.records_file)
        except FileNotFoundError:
            self._file_stamp, self._file_records = None, {}
            return {}
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._file_stamp:
            try:
                data = json.loads(self.records_file.read_text(encoding="utf-8"))
                self._file_records = {
                    (_name_key(name), _type_key(rdtype)): [v if isinstance(v, str) else tuple(v) for v in values]
                    for name, types in data.items() for rdtype, values in types.items()
                }
                self._file_stamp = stamp
            except (OSError, ValueError, AttributeError, TypeError, dns.exception.DNSException):
                pass  # half-written or malformed: keep the last good contents
        return self._file_records

    def _rrset(self, name: dns.name.Name, rdtype: str, values: Iterable[RecordValue]) -> dns.rrset.RRset:
        rdatas = [self._rdata(rdtype, value) for value in values]
        return dns.rrset.from_rdata_list(name, self.ttl, rdatas)

    @staticmethod
    def _rdata(rdtype: str, value: RecordValue) -> dns.rdata.Rdata:
        if rdtype == "TXT":
            strings = (value,) if isinstance(value, str) else value
            return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, [s.encode() for s in strings])
        return dns.rdata.from_text(dns.rdataclass.IN, rdtype, str(value), origin=dns.name.root, relativize=False)

    def _wire(self, query_wire: bytes, response: dns.message.Message, max_size: int) -> bytes:
        try:
            return response.to_wire(max_size=max_size)
        except dns.exception.TooBig:
            truncated = dns.message.make_response(dns.message.from_wire(query_wire))
            truncated.flags |= dns.flags.AA | dns.flags.RA | dns.flags.TC
            return truncated.to_wire()

    # --- transports -------------------------------------------------------------------------------------------------

    def _datagram(self, data: bytes, addr: Any) -> None:
        response = self.answer(data)
        if response is None or self._udp is None:
            return
        query = dns.message.from_wire(data)
        max_size = max(query.payload, 512) if query.edns >= 0 else 512
        wire = self._wire(data, response, max_size)
        delay = 0.0
        if query.question and self.delays:
            name, rdtype = _name_key(query.question[0].name), _type_key(query.question[0].rdtype)
            delays = {_selector_key(selector): seconds for selector, seconds in self.delays.items()}
            delay = delays.get((name, rdtype), delays.get(name, 0.0))
        if delay:
            asyncio.get_running_loop().call_later(delay, self._send_later, wire, addr)
        else:
            self._udp.sendto(wire, addr)

    def _send_later(self, wire: bytes, addr: Any) -> None:
        if self._udp is not None:
            self._udp.sendto(wire, addr)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tcp_writers.add(writer)
        try:
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                data = await reader.readexactly(length)
                response = self.answer(data)
                if response is None:
                    continue
                wire = self._wire(data, response, 65535)
                writer.write(struct.pack("!H", len(wire)) + wire)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._tcp_writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()


class _UDPProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DNSServer) -> None:
        self.server = server

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.server._datagram(data, addr)


def update_txt(records_file: Path, action: str, name: str, value: str) -> None:
    """Add (action ``auth``/``present``) or remove (``cleanup``) one TXT value at ``name`` in a records file, replacing
    the file by a rename so the server never reads it half-written, and note the call in ``dns-hook-calls.log``."""
    name = name.rstrip(".")
    data = json.loads(records_file.read_text(encoding="utf-8")) if records_file.exists() else {}
    values = data.setdefault(name, {}).setdefault("TXT", [])
    if action in ("auth", "present"):
        values.append(value)
    elif action == "cleanup":
        if value in values:
            values.remove(value)
    else:
        raise ValueError(f"unknown action {action!r}: use auth, present or cleanup")
    temporary = records_file.with_name(records_file.name + ".tmp")
    temporary.write_text(json.dumps(data), encoding="utf-8")
    os.replace(temporary, records_file)
    with open(records_file.with_name("dns-hook-calls.log"), "a", encoding="utf-8") as log:
        log.write(f"{action} {name} {value}\n")


if __name__ == "__main__":
    import sys

    update_txt(Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4])
