"""asyncssh as the server warren connects to: accepts one key, allows -L/-R, runs exec commands
by echoing them back with their exit status (no shell is involved).

Usage: asyncssh_server.py HOST_KEY AUTHORIZED_KEYS [KEX]
With KEX, that is the only key exchange the server offers. Prints "listening PORT" once bound.
"""
import asyncio, sys
import asyncssh

class Server(asyncssh.SSHServer):
    def connection_requested(self, dest_host, dest_port, orig_host, orig_port):
        return True
    def server_requested(self, listen_host, listen_port):
        return True

async def handle(process):
    process.stdout.write("ran: %s\n" % process.command)
    process.exit(3)

async def main():
    extra = {"kex_algs": [sys.argv[3]]} if len(sys.argv) > 3 else {}
    server = await asyncssh.listen("127.0.0.1", 0, server_host_keys=[sys.argv[1]],
                                   authorized_client_keys=sys.argv[2], server_factory=Server,
                                   process_factory=handle, allow_scp=False, **extra)
    port = server.sockets[0].getsockname()[1]
    print("listening", port, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
