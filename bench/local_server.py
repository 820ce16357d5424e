"""The benches' image server: aiohttp in its own process, bound to 127.0.0.1 only.

GET /img/{index}.jpg answers body_of(index), or the fault that fault_of(index) names:
"404", "500", "truncated" (half the body) or "hang" (never answers).
"""
from __future__ import annotations

import asyncio
import multiprocessing
import socket


def serve_images(body_of, fault_of, port_queue) -> None:
    from aiohttp import web

    async def handle(request):
        index = int(request.match_info["index"])
        fault = fault_of(index)
        if fault == "hang":
            await asyncio.sleep(3600)
        if fault in ("404", "500"):
            return web.Response(status=int(fault), text="no")
        body = body_of(index)
        return web.Response(body=body[: len(body) // 2] if fault == "truncated" else body, content_type="image/jpeg")

    async def main():
        app = web.Application()
        app.router.add_get("/img/{index}.jpg", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(runner, sock, backlog=1024).start()
        port_queue.put(sock.getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(main())


def start(body_of, fault_of) -> tuple[multiprocessing.Process, str]:
    """(the server process, its base URL)."""
    ports = multiprocessing.Queue()
    server = multiprocessing.Process(target=serve_images, args=(body_of, fault_of, ports), daemon=True)
    server.start()
    return server, f"http://127.0.0.1:{ports.get(timeout=30)}"
