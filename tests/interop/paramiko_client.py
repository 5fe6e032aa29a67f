"""paramiko as a client of warrend: -L (direct-tcpip) and -R (tcpip-forward), hash-checked.

Usage: paramiko_client.py PORT KEY HOSTKEY_LINE USER ECHO_PORT SIZE
"""
import base64, hashlib, socket, sys, threading
import paramiko

port, key, hostkey_line, user, echo, size = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
data = bytes((i * 7 + 3) % 251 for i in range(size))
print("want", hashlib.sha256(data).hexdigest(), flush=True)

def recv_all(ch):
    out = bytearray()
    while True:
        b = ch.recv(65536)
        if not b:
            return bytes(out)
        out += b

def send_then_eof(ch, payload):
    ch.sendall(payload)
    ch.shutdown_write()

kind, b64 = hostkey_line.split()[:2]
hostkey = paramiko.PKey.from_type_string(kind, base64.b64decode(b64))
sock = socket.create_connection(("127.0.0.1", port))
t = paramiko.Transport(sock)
t.connect(hostkey=hostkey, username=user, pkey=paramiko.Ed25519Key.from_private_key_file(key))

ch = t.open_channel("direct-tcpip", ("127.0.0.1", echo), ("127.0.0.1", 40000))
threading.Thread(target=send_then_eof, args=(ch, data), daemon=True).start()
print("L", hashlib.sha256(recv_all(ch)).hexdigest(), flush=True)
ch.close()

def relay(a, b):
    try:
        while True:
            x = a.recv(65536)
            if not x:
                break
            b.sendall(x)
    finally:
        try:
            b.shutdown_write() if hasattr(b, "shutdown_write") else b.shutdown(socket.SHUT_WR)
        except OSError:
            pass

def on_forward(channel, origin, server):
    target = socket.create_connection(("127.0.0.1", echo))
    threading.Thread(target=relay, args=(channel, target), daemon=True).start()
    threading.Thread(target=relay, args=(target, channel), daemon=True).start()

rport = t.request_port_forward("127.0.0.1", 0, handler=on_forward)
c = socket.create_connection(("127.0.0.1", rport))
threading.Thread(target=lambda: (c.sendall(data), c.shutdown(socket.SHUT_WR)), daemon=True).start()
got = bytearray()
while True:
    b = c.recv(65536)
    if not b:
        break
    got += b
print("R", hashlib.sha256(bytes(got)).hexdigest(), flush=True)
t.close()
