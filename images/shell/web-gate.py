#!/usr/bin/env python3
"""The web terminal's gate: the only way to ttyd, which listens on a socket only root can reach.

ttyd takes a credential only on its command line, which every process in the shell can read in
/proc, and it logs it at start. So ttyd runs without one, trusting the header named by its
--auth-header, and this gate, on the web port, lets a request through only with the shell's
credential (HTTP Basic, compared in constant time). It then sets that header itself, after
dropping any the client sent, and for a WebSocket it checks that the Origin is the page's own
host, as ttyd's --check-origin does. Of a plain request only its head and its body reach ttyd,
marked `Connection: close`: nothing the client sends after it on that connection does, so no
request can follow an authorised one unchecked. With a certificate it serves HTTPS.

With --jupyter PORT, requests under /jupyter/ go to JupyterLab on that loopback port instead, with
the same credential checked (JupyterLab checks its own token on top), and without the gate's header.
A WebSocket is piped both ways only once its backend answered 101.

Usage: web-gate.py [--jupyter PORT] PORT CREDENTIAL_FILE TTYD_SOCKET [CERT KEY]
The credential file holds `user:password` and stays readable by root only.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import ssl
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

AUTH_HEADER = "X-WebAuth-User"
MAX_HEAD = 16 * 1024
MAX_BODY = 1024 * 1024
# JupyterLab uploads a file of up to 15 MB in one request (larger ones in chunks of 1 MiB), as JSON.
MAX_JUPYTER_BODY = 32 * 1024 * 1024
JUPYTER_PREFIX = "/jupyter"


def parse_head(head: bytes) -> tuple[str, list[tuple[str, str]]] | None:
    """(request line, headers) of a request head, or None when it is not one."""
    try:
        lines = head.decode("latin-1").split("\r\n")
    except UnicodeDecodeError:
        return None
    request_line, headers = lines[0], []
    if len(request_line.split(" ")) != 3:
        return None
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            return None
        headers.append((name, value.strip()))
    return request_line, headers


def header(headers: list[tuple[str, str]], name: str) -> str | None:
    found = [value for key, value in headers if key.lower() == name.lower()]
    return found[0] if len(found) == 1 else None


def verdict(headers: list[tuple[str, str]], credential: bytes) -> tuple[int, str]:
    """(status, reason) to refuse with, or (0, user) to let the request through."""
    authorization = header(headers, "Authorization") or ""
    scheme, _, token = authorization.partition(" ")
    try:
        given = base64.b64decode(token.strip(), validate=True) if scheme.lower() == "basic" else b""
    except ValueError:
        given = b""
    if not hmac.compare_digest(given, credential):
        return 401, "Unauthorized"
    if (header(headers, "Upgrade") or "").lower() == "websocket":
        origin, host = header(headers, "Origin"), header(headers, "Host")
        if origin is None or host is None or urlsplit(origin).netloc.lower() != host.lower():
            return 403, "Forbidden"
    return 0, credential.split(b":", 1)[0].decode()


def forwarded_head(request_line: str, headers: list[tuple[str, str]], user: str | None) -> bytes:
    """The head passed on: the client's auth header dropped, the gate's set (for ttyd; JupyterLab
    gets none), and a plain request marked as the connection's last."""
    websocket = (header(headers, "Upgrade") or "").lower() == "websocket"
    kept = [(k, v) for k, v in headers if k.lower() != AUTH_HEADER.lower()]
    if not websocket:
        kept = [(k, v) for k, v in kept if k.lower() not in ("connection", "keep-alive")]
        kept.append(("Connection", "close"))
    if user is not None:
        kept.append((AUTH_HEADER, user))
    return (request_line + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in kept) + "\r\n").encode("latin-1")


def for_jupyter(request_line: str) -> bool:
    path = request_line.split(" ")[1]
    return path == JUPYTER_PREFIX or path.startswith((f"{JUPYTER_PREFIX}/", f"{JUPYTER_PREFIX}?"))


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def refuse(writer: asyncio.StreamWriter, status: int, reason: str) -> None:
    challenge = 'WWW-Authenticate: Basic realm="shell"\r\n' if status == 401 else ""
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\n{challenge}Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
    )
    await writer.drain()
    writer.close()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def handler(credential: bytes, socket_path: str, jupyter_port: int | None = None) -> Handler:
    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(client_reader.readuntil(b"\r\n\r\n"), timeout=30)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ConnectionError):
            client_writer.close()
            return
        parsed = parse_head(head[:-4])
        if parsed is None:
            await refuse(client_writer, 400, "Bad Request")
            return
        request_line, headers = parsed
        # Every path needs the shell's credential, JupyterLab's too: an image's or the user's own
        # Jupyter config can turn its token off, and the site's domain serves nothing unauthenticated.
        status, user = verdict(headers, credential)
        if status:
            await refuse(client_writer, status, user)
            return
        jupyter = jupyter_port is not None and for_jupyter(request_line)
        length = header(headers, "Content-Length") or "0"
        most = MAX_JUPYTER_BODY if jupyter else MAX_BODY
        if (
            header(headers, "Transfer-Encoding")
            or not (length.isascii() and length.isdigit())
            or int(length) > most
        ):
            await refuse(client_writer, 400, "Bad Request")
            return
        try:
            if jupyter:
                backend_reader, backend_writer = await asyncio.open_connection("127.0.0.1", jupyter_port)
            else:
                backend_reader, backend_writer = await asyncio.open_unix_connection(socket_path)
        except OSError:
            await refuse(client_writer, 502, "Bad Gateway")
            return
        backend_writer.write(forwarded_head(request_line, headers, None if jupyter else user))
        if (header(headers, "Upgrade") or "").lower() == "websocket":
            await upgrade(client_reader, client_writer, backend_reader, backend_writer)
            return
        if int(length):
            try:
                body = await asyncio.wait_for(client_reader.readexactly(int(length)), timeout=60)
                backend_writer.write(body)
            except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
                backend_writer.close()
                client_writer.close()
                return
        await backend_writer.drain()
        await pipe(backend_reader, client_writer)
        backend_writer.close()

    return handle


async def upgrade(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    backend_reader: asyncio.StreamReader,
    backend_writer: asyncio.StreamWriter,
) -> None:
    """A WebSocket: both ways only once the backend switched protocols (101). Any other answer is
    passed on and ends the connection, so no later request on it reaches the backend unchecked."""
    try:
        await backend_writer.drain()
        answer = await asyncio.wait_for(backend_reader.readuntil(b"\r\n\r\n"), timeout=30)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ConnectionError):
        backend_writer.close()
        await refuse(client_writer, 502, "Bad Gateway")
        return
    client_writer.write(answer)
    if answer.split(b" ", 2)[1:2] == [b"101"]:
        await asyncio.gather(pipe(client_reader, backend_writer), pipe(backend_reader, client_writer))
        return
    lines = answer[:-4].decode("latin-1").split("\r\n")[1:]
    fields = [(name.strip(), value.strip()) for name, _, value in (line.partition(":") for line in lines)]
    length = header(fields, "Content-Length") or "0"
    if length.isascii() and length.isdigit() and 0 < int(length) <= MAX_BODY:
        try:
            client_writer.write(await asyncio.wait_for(backend_reader.readexactly(int(length)), timeout=30))
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
            pass
    backend_writer.close()
    try:
        await client_writer.drain()
    except ConnectionError:
        pass
    client_writer.close()


async def serve(
    port: int, credential: bytes, socket_path: str, tls: ssl.SSLContext | None, jupyter_port: int | None
) -> None:
    server = await asyncio.start_server(
        handler(credential, socket_path, jupyter_port), port=port, ssl=tls, limit=MAX_HEAD
    )
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> int:
    jupyter_port = None
    if len(argv) > 2 and argv[1] == "--jupyter" and argv[2].isdigit():
        jupyter_port, argv = int(argv[2]), [argv[0], *argv[3:]]
    if len(argv) not in (4, 6):
        print(__doc__.split("Usage: ")[1].splitlines()[0], file=sys.stderr)
        return 64
    port, credential_file, socket_path = int(argv[1]), Path(argv[2]), argv[3]
    credential = credential_file.read_bytes().strip()
    if b":" not in credential:
        print(f"web-gate: {credential_file} does not hold user:password", file=sys.stderr)
        return 64
    tls = None
    if len(argv) == 6:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(argv[4], argv[5])
    asyncio.run(serve(port, credential, socket_path, tls, jupyter_port))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
