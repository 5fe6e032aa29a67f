"""asyncssh as a client of warrend: -L (direct-tcpip) and -R (tcpip-forward), hash-checked.

Usage: asyncssh_client.py PORT KEY KNOWN_HOSTS USER ECHO_PORT SIZE [KEX]
Prints "kex <name>" (the only one offered when KEX is given, else asyncssh's defaults), then
"L <sha256>" and "R <sha256>" of what came back through each path.
"""
import asyncio, hashlib, sys
import asyncssh

async def main():
    port, key, known, user, echo, size = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
    kex = sys.argv[7] if len(sys.argv) > 7 else None
    data = bytes((i * 7 + 3) % 251 for i in range(size))
    print("want", hashlib.sha256(data).hexdigest(), flush=True)
    extra = {"kex_algs": [kex]} if kex else {}
    async with asyncssh.connect("127.0.0.1", port=int(port), username=user, client_keys=[key],
                                known_hosts=known, agent_path=None, config=None, **extra) as conn:
        print("kex", kex or "default", flush=True)
        reader, writer = await conn.open_connection("127.0.0.1", echo)
        writer.write(data)
        writer.write_eof()
        got = await reader.read()
        print("L", hashlib.sha256(got).hexdigest(), flush=True)
        listener = await conn.forward_remote_port("127.0.0.1", 0, "127.0.0.1", echo)
        r, w = await asyncio.open_connection("127.0.0.1", listener.get_port())
        w.write(data)
        w.write_eof()
        got = await r.read()
        print("R", hashlib.sha256(got).hexdigest(), flush=True)
        w.close()
        listener.close()

asyncio.run(main())
