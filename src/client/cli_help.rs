//! The `--help` epilogue: where warren differs from OpenSSH, and its exit statuses.

pub const AFTER_HELP: &str = "\
Where warren differs from OpenSSH ssh:
  * Holding the tunnels is the default: -N is accepted but not needed.
  * ExitOnForwardFailure defaults to yes: if a forward cannot be set up, warren exits
    instead of running without it (use -o ExitOnForwardFailure=no for ssh's behaviour).
  * -L listeners are bound before connecting, so a port already in use is reported at
    once, before any password or passphrase prompt.
  * A host known only under another key type is refused, never accepted as new.
  * With -v, warren prints 'ready: ...' once every forward is up (a signal for scripts).
  * Tunnels heal themselves: keepalive is on (ServerAliveInterval 15, ServerAliveCountMax 3)
    and a lost connection is re-established with backoff while -L/-D ports stay open;
    --no-reconnect turns that off. SIGHUP reconnects at once.
  * -L/-D port 0 picks a free port; --exec runs a local command with the tunnel up.
  * One -D port speaks SOCKS4/4a/5 and HTTP proxy (CONNECT and plain GET).
  * `warren status` and `warren stop` list and stop running warren tunnels.
  * A forwarded connection whose local reader keeps up slows the sender down, as with ssh;
    one that stops reading (takes no packet within 5 ms) has what arrives for it parked
    (4 MiB in memory, then a temporary file, up to 1 GiB; beyond that it is closed), so
    the other connections of the session never wait for it.
  * Data from the server is acknowledged as soon as warren has nothing to send back, so
    sshd's Nagle pause (40 ms per new -R connection with ssh) does not apply.
  * Every ssh flag is accepted: -X/-Y, -K, -I warn and are ignored; -e has no effect (warren
    never runs an interactive session).
  * -Q lists the algorithms of warren's own SSH engine; -y logs to syslog (stderr if
    /dev/log is missing); ConnectionAttempts retries the first connection only.
  * --preconnect (opt-in) saves -L connections the channel-open round trip by opening
    the next channel in advance (after a pause through sshd; always through warrend).

Exit status:
  0    stopped cleanly (SIGINT/SIGTERM: listeners close at once, open connections get up to
       5 s to finish, -R forwards are cancelled), or the remote/--exec command's own status
  2    usage error: bad flag, malformed forward spec, bad -o option
  3    a forward could not be set up (local port in use, cannot bind)
  4    host key verification failed (changed, revoked, unknown with strict checking)
  255  connection or authentication failure, or the connection was lost (as ssh)";
