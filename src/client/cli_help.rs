//! The `--help` epilogue: where warren differs from OpenSSH, and its exit statuses.

pub const AFTER_HELP: &str = "\
Where warren differs from OpenSSH ssh:
  * Holding the tunnels is the default: -N is accepted but not needed.
  * ExitOnForwardFailure defaults to yes: if a forward cannot be set up, warren exits
    instead of running without it (use -o ExitOnForwardFailure=no for ssh's behaviour).
  * -L listeners are bound before connecting, so a port already in use is reported at
    once, before any password or passphrase prompt.
  * A host known only under another key type is refused, never accepted as new.
  * A host certificate signed by a known @cert-authority but expired or for another name
    is refused, not offered as an unknown key to accept.
  * With -v, warren prints 'ready: ...' once every forward is up (a signal for scripts).
  * Tunnels heal themselves: keepalive is on (ServerAliveInterval 15, ServerAliveCountMax 3)
    and a lost connection is re-established while -L/-D ports stay open: a server that is
    down is probed (TCP) every ~150 ms and reconnected within a fraction of a second of its
    return; failed handshakes back off. --no-reconnect turns that off. SIGHUP reconnects
    at once.
  * -L/-D port 0 picks a free port; --exec runs a local command with the tunnel up.
  * One -D port speaks SOCKS4/4a/5 and HTTP proxy (CONNECT and plain GET).
  * `warren status [--json|--check NAME]`, `warren stop [PID|NAME|--all]`, `warren
    completions SHELL`, `warren man` (first argument only: a host named status is
    ssh://status). -O speaks warren's own protocol (JSON lines), not ssh's mux: ssh -O
    cannot drive a warren. With ControlMaster auto/no and a warren at ControlPath, a new
    warren hands it its forwards and exits. ControlPersist is moot: the master stays up.
  * Flow control follows each connection's reader: a slow reader slows only its own
    sender, a stalled one stops only its own, and nothing is parked in memory beyond the
    channel's window or on disk. Windows grow on long fat links (up to 64 MiB), so one
    download is not capped at OpenSSH's 2 MiB per round trip.
  * Data from the server is acknowledged as soon as warren has nothing to send back, so
    sshd's Nagle pause (40 ms per new -R connection with ssh) does not apply.
  * Every ssh flag is accepted: -X/-Y, -K, -I warn and are ignored; -e has no effect (warren
    never runs an interactive session).
  * -Q lists the algorithms of warren's own SSH engine; -y logs to syslog (stderr if
    /dev/log is missing); ConnectionAttempts retries the first connection only.
  * -w: the local tun/tap device outlives a lost connection; the tunnel reopens on the new
    session with the device's addresses and routes in place (ssh -w loses the device).
  * --route CIDR (Linux, root, nftables) sends this machine's TCP to whole networks through
    the tunnel with no proxy settings (sshuttle mode); --dns answers DNS through it. UDP
    other than DNS and ICMP are not carried.
  * --preconnect (opt-in) saves -L connections the channel-open round trip by opening
    the next channel in advance (after a pause through sshd; always through warrend).

Exit status:
  0    stopped cleanly (SIGINT/SIGTERM: listeners close at once, open connections get up to
       5 s to finish, -R forwards are cancelled), or the remote/--exec command's own status
  2    usage error: bad flag, malformed forward spec, bad -o option, --route without
       CAP_NET_ADMIN or nft
  3    a forward could not be set up (local port in use, cannot bind)
  4    host key verification failed (changed, revoked, unknown with strict checking)
  255  connection or authentication failure, or the connection was lost (as ssh)";

/// Under `--help`, which stays one screen of flags: the rest is in the manual.
pub const SHORT_AFTER_HELP: &str = "\
Subcommands: warren status [--json|--check NAME], warren stop [PID|NAME|--all],
warren completions SHELL, warren man.
Each flag in full, where warren differs from ssh, and the exit statuses: warren man";
