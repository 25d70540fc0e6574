"""A TCP forwarder that a test can cut: a database that is unreachable for a while, on demand.

The service connects to the proxy's port instead of the server's. `cut()` drops every forwarded
connection and refuses new ones (each is accepted and reset at once, as a host whose server is
down answers), until `restore()`. It runs in threads of the test process.
"""

from __future__ import annotations

import socket
import struct
import threading
from types import TracebackType

CHUNK = 1 << 16
CONNECT_TIMEOUT_S = 5


def reset(sock: socket.socket) -> None:
    """Close with an RST rather than a FIN: the peer's next read fails at once."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)  # wakes a pump thread blocked in recv on it
    except OSError:
        pass  # already closed by the other side
    sock.close()


class TcpProxy:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._up = threading.Event()
        self._up.set()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def cut(self) -> None:
        """From now on the upstream is unreachable: open connections break, new ones are reset."""
        self._up.clear()
        with self._lock:
            dropped, self._open = self._open, set()
        for sock in dropped:
            reset(sock)

    def restore(self) -> None:
        self._up.set()

    def close(self) -> None:
        self.cut()
        self._listener.close()  # the accept loop ends on the error this raises there

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            if not self._up.is_set():
                reset(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=CONNECT_TIMEOUT_S)
            except OSError:
                reset(client)
                continue
            server.settimeout(None)
            with self._lock:
                self._open |= {client, server}
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(CHUNK):
                sink.sendall(data)
        except OSError:
            pass  # cut, or the other side went away
        with self._lock:
            self._open -= {source, sink}
        for sock in (source, sink):
            reset(sock)
