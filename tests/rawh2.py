"""A minimal HTTP/2 client for misbehaving on purpose: frames written by hand, so a test can
stop anywhere (before the preface, inside a message) and read back what the server sent."""
import socket
import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def _hpack_int(value, prefix_bits, first=0):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack(headers):
    """Literal header fields without indexing, new names, no Huffman."""
    out = bytearray()
    for name, value in headers:
        n, v = name.encode(), value.encode()
        out += b"\x00" + _hpack_int(len(n), 7) + n + _hpack_int(len(v), 7) + v
    return bytes(out)


def grpc_headers(path, port):
    return hpack([(":method", "POST"), (":scheme", "http"), (":path", path),
                  (":authority", f"127.0.0.1:{port}"), ("content-type", "application/grpc"),
                  ("te", "trailers")])


class RawConnection:
    """One TCP connection that has sent the preface and SETTINGS; sends never block (a
    stalled client does not care what was not sent)."""

    def __init__(self, port, answer_pings=True):
        self.answer_pings = answer_pings
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.received = bytearray()
        self.answered = 0
        self.closed = False
        self.sock.sendall(PREFACE + frame(SETTINGS, 0, 0))
        # The server's SETTINGS (its stream window among them) apply once acknowledged.
        while not any(f[0] == SETTINGS and not f[1] & ACK for f in self.frames()):
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection during the handshake")
            self.received += chunk
        self.sock.setblocking(False)
        self._answer()

    def send(self, data):
        try:
            return self.sock.send(data)
        except (BlockingIOError, BrokenPipeError, ConnectionResetError):
            return 0

    def send_all(self, data):
        """Writes all of `data`, blocking; a server that closes part-way ends it quietly."""
        self.sock.setblocking(True)
        try:
            self.sock.sendall(data)
        except OSError:
            pass
        finally:
            self.sock.setblocking(False)

    def pump(self):
        """Reads what has arrived; answers SETTINGS and PING as a live client would."""
        while not self.closed:
            try:
                chunk = self.sock.recv(1 << 16)
            except BlockingIOError:
                break
            except (ConnectionResetError, OSError):
                chunk = b""
            if not chunk:
                self.closed = True
                break
            self.received += chunk
        self._answer()

    def _answer(self):
        """Acknowledges SETTINGS and PINGs not yet answered."""
        frames = self.frames()
        for kind, flags, _, payload in frames[self.answered:]:
            if kind == SETTINGS and not flags & ACK:
                self.send(frame(SETTINGS, ACK, 0))
            elif kind == PING and not flags & ACK and self.answer_pings:
                self.send(frame(PING, ACK, 0, payload))
        self.answered = len(frames)

    def frames(self):
        """Every complete frame received so far: (type, flags, stream, payload)."""
        out, at, buf = [], 0, self.received
        while len(buf) - at >= 9:
            length = int.from_bytes(buf[at:at + 3], "big")
            if len(buf) - at < 9 + length:
                break
            kind, flags = buf[at + 3], buf[at + 4]
            stream = int.from_bytes(buf[at + 5:at + 9], "big") & 0x7FFFFFFF
            out.append((kind, flags, stream, bytes(buf[at + 9:at + 9 + length])))
            at += 9 + length
        return out

    def close(self):
        self.sock.close()
