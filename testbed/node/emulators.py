"""Small stand-ins for the servers of the images people try first (the catalog in ``images.py`` maps
the image's own entrypoint and command names to these, through the launchers in ``bin/``).

* ``nginx``: an HTTP/1.1 file server on port 80 (``/usr/share/nginx/html`` when the pod mounts one,
  else nginx's default welcome page), ``Server: nginx/<version>``, access log lines on stdout;
  ``nginx -v`` / ``-t`` answer like nginx. Stops on SIGQUIT / SIGTERM.
* ``redis-server``: a RESP2 server on port 6379 (``--port`` honoured) with the string commands
  (PING, ECHO, SET [EX|PX|NX|XX], GET, DEL, EXISTS, INCR/DECR[BY], KEYS, EXPIRE, TTL, DBSIZE,
  FLUSHDB/ALL, INFO, SELECT, CONFIG GET, COMMAND, CLIENT, QUIT), inline commands too.
* ``redis-cli``: sends one command (``-h``, ``-p``) and prints the reply as redis-cli does.
* ``vectorAdd``: the CUDA sample's output; fails as the real binary does without a GPU (no driver
  libraries injected: ``HAMI_EMU_GPU_STATE_DIR`` unset).

Standalone on purpose (``python -S emulators.py NAME ARGS``): it runs inside a container's root, which
shows the interpreter and the checkout but not the project's virtual environment on ``sys.path``.
"""

import os
import signal
import socket
import sys
import time

NGINX_VERSION = "1.27.3"
REDIS_VERSION = "7.4.1"

_WELCOME = b"""<!DOCTYPE html>
<html>
<head>
<title>Welcome to nginx!</title>
</head>
<body>
<h1>Welcome to nginx!</h1>
<p>If you see this page, the nginx web server is successfully installed and
working. Further configuration is required.</p>
<p><em>Thank you for using nginx.</em></p>
</body>
</html>
"""


def _stop_on(*signals):
    def handler(_sig, _frame):
        sys.stdout.flush()
        os._exit(0)

    for s in signals:
        signal.signal(s, handler)


# -- nginx ------------------------------------------------------------------------------------------


def nginx(args):
    if "-v" in args or "-V" in args:
        print(f"nginx version: nginx/{NGINX_VERSION}", file=sys.stderr)
        return 0
    if "-t" in args:
        print("nginx: the configuration file /etc/nginx/nginx.conf syntax is ok", file=sys.stderr)
        print("nginx: configuration file /etc/nginx/nginx.conf test is successful", file=sys.stderr)
        return 0
    root = os.environ.get("NGINX_ROOT", "/usr/share/nginx/html")
    port = int(os.environ.get("NGINX_PORT", "80"))
    # listen before anything else is imported: clients that connect as soon as the pod is Running
    # wait in the backlog instead of being refused (real nginx binds within milliseconds)
    family = socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET
    try:
        sock = _listen(family, port)
    except OSError:
        family = socket.AF_INET
        sock = _listen(family, port)
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        server_version = f"nginx/{NGINX_VERSION}"
        sys_version = ""
        protocol_version = "HTTP/1.1"

        def version_string(self):
            return self.server_version

        def _body(self):
            path = self.path.split("?", 1)[0]
            rel = os.path.normpath("/" + path).lstrip("/")
            full = os.path.join(root, rel)
            if os.path.isdir(full):
                full = os.path.join(full, "index.html")
            if os.path.isfile(full):
                with open(full, "rb") as f:
                    return 200, f.read()
            if rel in ("", "index.html") and not os.path.isdir(root):
                return 200, _WELCOME
            return 404, (
                b"<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n<center><h1>404 Not Found"
                b"</h1></center>\r\n<hr><center>nginx/" + NGINX_VERSION.encode() + b"</center>\r\n</body>\r\n"
                b"</html>\r\n"
            )

        def _serve(self, head):
            code, body = self._body()
            self.send_response(code)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)
            self._last = (code, len(body))

        def do_GET(self):
            self._serve(False)

        def do_HEAD(self):
            self._serve(True)

        def log_request(self, code="-", size="-"):
            ua = self.headers.get("User-Agent", "-") if self.headers else "-"
            when = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
            sys.stdout.write(
                f'{self.client_address[0]} - - [{when}] "{self.requestline}" {code} {size} "-" "{ua}"\n'
            )
            sys.stdout.flush()

        def log_message(self, format, *args):  # errors: nginx writes them to error.log (stderr)
            sys.stderr.write((format % args) + "\n")

    class Server(ThreadingHTTPServer):
        address_family = family
        daemon_threads = True

    srv = Server(("", port), Handler, bind_and_activate=False)
    srv.socket.close()
    srv.socket = sock
    srv.server_address = sock.getsockname()[:2]
    _stop_on(signal.SIGQUIT, signal.SIGTERM, signal.SIGINT)
    stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.gmtime())
    sys.stderr.write(f"{stamp} [notice] 1#1: nginx/{NGINX_VERSION}\n")
    sys.stderr.write(f"{stamp} [notice] 1#1: start worker processes\n")
    sys.stderr.flush()
    srv.serve_forever()
    return 0


def _listen(family, port):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    s.listen(128)
    return s


def docker_entrypoint(args):
    """The images' entrypoint scripts: announce, then run the command (as the real ones do last)."""
    if not args:
        return 0
    if args[0] in ("nginx", "nginx-debug"):
        print("/docker-entrypoint.sh: Configuration complete; ready for start up", flush=True)
    os.execvp(args[0], args)
    return 127


# -- redis ------------------------------------------------------------------------------------------


class _Store:
    def __init__(self):
        import threading

        self.data = {}
        self.expires = {}
        self.lock = threading.Lock()

    def live(self, key):
        exp = self.expires.get(key)
        if exp is not None and exp <= time.monotonic():
            self.data.pop(key, None)
            self.expires.pop(key, None)
        return key in self.data


def _bulk(v):
    if v is None:
        return b"$-1\r\n"
    if isinstance(v, str):
        v = v.encode()
    return b"$%d\r\n%s\r\n" % (len(v), v)


def _err(msg):
    return b"-" + msg.encode() + b"\r\n"


def _int(n):
    return b":%d\r\n" % n


def _array(items):
    return b"*%d\r\n" % len(items) + b"".join(_bulk(i) for i in items)


OK = b"+OK\r\n"


def _redis_command(store, argv, port):
    cmd = argv[0].decode().upper()
    a = argv[1:]
    wrong = _err(f"ERR wrong number of arguments for '{cmd.lower()}' command")
    with store.lock:
        if cmd == "PING":
            return b"+PONG\r\n" if not a else _bulk(a[0])
        if cmd == "ECHO":
            return _bulk(a[0]) if len(a) == 1 else wrong
        if cmd in ("SELECT", "CLIENT", "READONLY"):
            return OK
        if cmd == "HELLO":
            return _err("NOPROTO unsupported protocol version")
        if cmd == "COMMAND":
            return b"*0\r\n"
        if cmd == "CONFIG":
            if len(a) >= 2 and a[0].upper() == b"GET":
                return _array([a[1], b""]) if a[1] != b"*" else b"*0\r\n"
            return OK
        if cmd == "SET":
            if len(a) < 2:
                return wrong
            key, val, opts = a[0], a[1], [o.upper() for o in a[2:]]
            exists = store.live(key)
            if (b"NX" in opts and exists) or (b"XX" in opts and not exists):
                return b"$-1\r\n"
            store.data[key] = val
            store.expires.pop(key, None)
            for unit, scale in ((b"EX", 1.0), (b"PX", 0.001)):
                if unit in opts:
                    i = opts.index(unit)
                    store.expires[key] = time.monotonic() + float(a[2 + i + 1]) * scale
            return OK
        if cmd == "GET":
            if len(a) != 1:
                return wrong
            return _bulk(store.data.get(a[0]) if store.live(a[0]) else None)
        if cmd in ("DEL", "UNLINK"):
            n = 0
            for k in a:
                if store.live(k):
                    store.data.pop(k)
                    store.expires.pop(k, None)
                    n += 1
            return _int(n)
        if cmd == "EXISTS":
            return _int(sum(1 for k in a if store.live(k)))
        if cmd in ("INCR", "DECR", "INCRBY", "DECRBY"):
            by = int(a[1]) if cmd.endswith("BY") else 1
            by = -by if cmd.startswith("DECR") else by
            try:
                n = int(store.data.get(a[0], b"0")) + by if store.live(a[0]) else by
            except ValueError:
                return _err("ERR value is not an integer or out of range")
            store.data[a[0]] = str(n).encode()
            return _int(n)
        if cmd == "KEYS":
            import fnmatch

            pat = a[0].decode() if a else "*"
            keys = [k for k in list(store.data) if store.live(k)]
            return _array([k for k in keys if fnmatch.fnmatchcase(k.decode(), pat)])
        if cmd in ("EXPIRE", "PEXPIRE"):
            if not store.live(a[0]):
                return _int(0)
            store.expires[a[0]] = time.monotonic() + int(a[1]) * (1 if cmd == "EXPIRE" else 0.001)
            return _int(1)
        if cmd == "TTL":
            if not store.live(a[0]):
                return _int(-2)
            exp = store.expires.get(a[0])
            return _int(-1 if exp is None else max(0, round(exp - time.monotonic())))
        if cmd == "DBSIZE":
            return _int(sum(1 for k in list(store.data) if store.live(k)))
        if cmd in ("FLUSHDB", "FLUSHALL"):
            store.data.clear()
            store.expires.clear()
            return OK
        if cmd == "INFO":
            text = (
                f"# Server\r\nredis_version:{REDIS_VERSION}\r\nredis_mode:standalone\r\ntcp_port:{port}\r\n"
                f"# Replication\r\nrole:master\r\nconnected_slaves:0\r\n"
                f"# Keyspace\r\ndb0:keys={len(store.data)},expires={len(store.expires)}\r\n"
            )
            return _bulk(text)
    return _err(f"ERR unknown command '{cmd.lower()}', with args beginning with: ")


def _read_command(rfile):
    line = rfile.readline()
    if not line:
        return None
    if not line.startswith(b"*"):
        return line.split()  # an inline command (telnet, nc)
    argv = []
    for _ in range(int(line[1:])):
        n = int(rfile.readline()[1:])
        argv.append(rfile.read(n + 2)[:n])
    return argv


def redis_server(args):
    if args and args[0] in ("-v", "--version"):
        print(f"Redis server v={REDIS_VERSION} sha=00000000:0 malloc=libc bits=64 build=0")
        return 0
    port = 6379
    if "--port" in args:
        port = int(args[args.index("--port") + 1])
    sock = _listen(socket.AF_INET, port)  # first, as for nginx
    import socketserver

    store = _Store()

    class Handler(socketserver.StreamRequestHandler):
        def handle(self):
            while True:
                try:
                    argv = _read_command(self.rfile)
                except (OSError, ValueError):
                    return
                if argv is None:
                    return
                if not argv:
                    continue
                if argv[0].upper() == b"QUIT":
                    self.wfile.write(OK)
                    return
                self.wfile.write(_redis_command(store, argv, port))
                self.wfile.flush()

    class Server(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True

    srv = Server(("0.0.0.0", port), Handler, bind_and_activate=False)
    srv.socket.close()
    srv.socket = sock
    _stop_on(signal.SIGTERM, signal.SIGINT)
    stamp = time.strftime("%d %b %Y %H:%M:%S.000", time.gmtime())
    pid = os.getpid()
    print(f"1:M {stamp} * Redis version={REDIS_VERSION}, bits=64, pid={pid}, just started", flush=True)
    print(f"1:M {stamp} * Ready to accept connections tcp", flush=True)
    srv.serve_forever()
    return 0


def _print_reply(f, indent=""):
    line = f.readline()
    kind, rest = line[:1], line[1:].rstrip(b"\r\n")
    if kind == b"+":
        print(rest.decode())
    elif kind == b"-":
        print(f"(error) {rest.decode()}")
    elif kind == b":":
        print(f"(integer) {rest.decode()}")
    elif kind == b"$":
        n = int(rest)
        print("(nil)" if n < 0 else f'"{f.read(n + 2)[:n].decode(errors="replace")}"')
    elif kind == b"*":
        n = int(rest)
        if n == 0:
            print("(empty array)")
        for i in range(n):
            sys.stdout.write(f"{indent}{i + 1}) ")
            _print_reply(f, indent + "   ")


def redis_cli(args):
    host, port, argv = "127.0.0.1", 6379, []
    it = iter(args)
    for a in it:
        if a == "-h":
            host = next(it)
        elif a == "-p":
            port = int(next(it))
        else:
            argv.append(a)
    argv = argv or ["PING"]
    try:
        s = socket.create_connection((host, port), timeout=10)
    except OSError as e:
        print(f"Could not connect to Redis at {host}:{port}: {e.strerror or e}", file=sys.stderr)
        return 1
    s.sendall(_array([x.encode() for x in argv]))
    with s.makefile("rb") as f:
        _print_reply(f)
    return 0


# -- CUDA samples -----------------------------------------------------------------------------------


def vector_add(_args):
    print("[Vector addition of 50000 elements]")
    if not os.environ.get("HAMI_EMU_GPU_STATE_DIR"):
        print(
            "Failed to allocate device vector A (error code CUDA driver version is insufficient for CUDA "
            "runtime version)!",
            file=sys.stderr,
        )
        return 1
    print("Copy input data from the host memory to the CUDA device")
    print("CUDA kernel launch with 196 blocks of 256 threads")
    print("Copy output data from the CUDA device to the host memory")
    print("Test PASSED")
    print("Done")
    return 0


PROGRAMS = {
    "nginx": nginx,
    "docker-entrypoint.sh": docker_entrypoint,
    "redis-server": redis_server,
    "redis-cli": redis_cli,
    "vectorAdd": vector_add,
}


def main(argv):
    if len(argv) < 2 or argv[1] not in PROGRAMS:
        print(f"usage: emulators.py {{{','.join(PROGRAMS)}}} [ARGS]", file=sys.stderr)
        return 2
    return PROGRAMS[argv[1]](argv[2:]) or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
