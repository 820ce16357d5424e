"""A tiny DNS server for tests and benches, bound to 127.0.0.1 only: it answers A queries
for the names it is given with 127.0.0.1, NXDOMAIN for any other name, and answers the
`slow` names only after `delay` seconds. It counts the queries it receives."""
from __future__ import annotations

import asyncio
import contextlib
import threading

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


class DnsServer(asyncio.DatagramProtocol):
    def __init__(self, names, slow=(), delay: float = 0.05):
        self.names, self.slow, self.delay = set(names), set(slow), delay
        self.queries = 0

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.queries += 1
        query = dns.message.from_wire(data)
        name = query.question[0].name.to_text(omit_final_dot=True)
        response = dns.message.make_response(query)
        if name in self.names:
            response.answer.append(dns.rrset.from_text(query.question[0].name, 300, "IN", "A", "127.0.0.1"))
        else:
            response.set_rcode(dns.rcode.NXDOMAIN)
        reply = response.to_wire()
        if name in self.slow:
            asyncio.get_running_loop().call_later(self.delay, self.transport.sendto, reply, addr)
        else:
            self.transport.sendto(reply, addr)


async def _start(server: DnsServer) -> int:
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: server, local_addr=("127.0.0.1", 0))
    return transport.get_extra_info("sockname")[1]


@contextlib.contextmanager
def running(names, slow=(), delay: float = 0.05):
    """Serve in a background thread; yields (server, port)."""
    server = DnsServer(names, slow, delay)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    port = asyncio.run_coroutine_threadsafe(_start(server), loop).result(timeout=10)
    try:
        yield server, port
    finally:
        loop.call_soon_threadsafe(server.transport.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)


def serve_forever(names, slow, delay: float, port_queue) -> None:
    """For a separate process (the bench): serve until killed."""
    async def main():
        port_queue.put(await _start(DnsServer(names, slow, delay)))
        await asyncio.Event().wait()

    asyncio.run(main())
