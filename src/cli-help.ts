/** The CLI's usage line and --help text, worded and laid out as aiosmtpd's argparse. */
import { CAPTURE_HELP } from './capture/cli.js';

const USAGE = `usage: tsmtpd [-h] [-v] [-n] [-c CLASSPATH] [-s SIZE] [-u] [-d] [--log-format FORMAT] [-l [HOST:PORT]] [--tlscert TLSCERT] [--tlskey TLSKEY] [--no-requiretls] [--smtpscert SMTPSCERT] [--smtpskey SMTPSKEY] [--auth-file PATH] [--auth-required] [--lmtp] [--unix PATH] [--unix-mode MODE] [--proxy-protocol[=SECONDS]] [--xclient-allow ADDRS] [--xforward-allow ADDRS] [--dsn] [--offer-requiretls] [--accept-unknown-parameters] [--auth-results[=ID]] [--auth-results-dns SERVERS] [--data-line-limit N] [--workers N] [--shutdown-timeout S] [capture options] [classargs ...]`;

export const HELP = `${USAGE}

An RFC 5321 SMTP server with extensions, option-compatible with aiosmtpd.

positional arguments:
  classargs             Additional arguments passed to the handler CLASS (its static fromCli).

options:
  -h, --help            Show this help message and exit.
  -v, --version         Show the version and exit.
  -n, --nosetuid        This program generally tries to setuid nobody, unless this flag is set.
                        The setuid call will fail if this program is not run as root (in which
                        case, use this flag).
  -c CLASSPATH, --class CLASSPATH
                        Use the given class, as a built-in name (Debugging, Sink, Mailbox, Proxy, JetStream, Capture) or
                        MODULE:EXPORT (e.g. ./my-handler.js:MyHandler), as the handler class.
                        Default: Debugging. (-c Sink buffered: a Sink that gathers each body.)
  -s SIZE, --size SIZE  The maximum message size in bytes, advertised with SIZE and enforced
                        (552). 0 means no limit. Default: 33554432.
  --data-line-limit N   Longest DATA text line in octets with its CRLF; a longer one gets
                        500 5.5.2 after the body (BDAT is exempt). 0 means none. Default: 1001.
  -u, --smtputf8        Enable the SMTPUTF8 extension (RFC 6531).
  -d, --debug           Log each connection's conversation on stderr, both directions, with a
                        connection id and a timestamp (AUTH masked, bodies not logged); -dd
                        also body sizes, TLS parameters and hook timings.
  --log-format FORMAT   text (the default) or json: one JSON object a line, for log shippers.
  --lmtp                Speak LMTP (RFC 2033) instead of SMTP.
  --unix PATH           Listen on a Unix socket at PATH (instead of TCP, unless -l is given too).
  --unix-mode MODE      File mode of the Unix socket, in octal (e.g. 660).
  --tlscert TLSCERT     Certificate (PEM) for STARTTLS; TLS is then required (see --no-requiretls).
  --tlskey TLSKEY       Private key (PEM) for STARTTLS.
  --no-requiretls       With --tlscert, accept mail without STARTTLS too.
  --smtpscert SMTPSCERT Certificate (PEM) for implicit TLS (SMTPS, RFC 8314) on the listener.
  --smtpskey SMTPSKEY   Private key (PEM) for implicit TLS.
  --auth-file PATH      Offer AUTH PLAIN and LOGIN (over TLS only) against an Apache htpasswd
                        file (bcrypt as written by htpasswd -B, $apr1$, {SHA}); re-read when
                        it changes.
  --auth-required       Refuse mail until the client authenticated (530).
  --proxy-protocol[=SECONDS]
                        Expect a PROXY protocol v1/v2 header (HAProxy's send-proxy /
                        send-proxy-v2) first on every connection, within SECONDS (default 5);
                        the handler then sees the real client address.
  --xclient-allow ADDRS Offer Postfix's XCLIENT to these clients (comma-separated addresses or
                        CIDR ranges; may be repeated).
  --xforward-allow ADDRS
                        Offer Postfix's XFORWARD to these MTAs (a content filter's front end;
                        comma-separated addresses or CIDR ranges; may be repeated).
  --dsn                 Offer DSN (RFC 3461): RET, ENVID, NOTIFY and ORCPT are checked and given
                        to the handler typed (without it they get 555).
  --offer-requiretls    Offer REQUIRETLS (RFC 8689) once a session runs over TLS (needs
                        --tlscert or --smtpscert). Not aiosmtpd's --no-requiretls.
  --accept-unknown-parameters
                        Give MAIL/RCPT parameters the server does not know to the handler
                        (mailOptions.unknown) instead of answering 555.
  --auth-results[=ID]   Check SPF, DKIM, DMARC and ARC for each message and put one
                        Authentication-Results header (RFC 8601) in front, with authserv-id ID
                        (default: the server's hostname); forged ones naming ID are removed.
  --auth-results-dns SERVERS
                        DNS servers those checks ask (IP or IP:PORT, comma-separated);
                        default: the system's resolver.
  --workers N           Serve from N processes (node:cluster) on the same listeners; 'auto' is one
                        per core. A worker that dies is restarted. Default: 1.
  --shutdown-timeout S  On SIGTERM/SIGINT, seconds open transactions may take to finish before
                        421. Default: 10.
  -l [HOST:PORT], --listen [HOST:PORT]
                        Optional host and port to listen on. If the PORT part is not given, then
                        port 8025 is used. If only :PORT is given, then localhost is used for the
                        hostname. If neither are given, localhost:8025 is used; localhost means
                        both ::1 (where available) and 127.0.0.1.
${CAPTURE_HELP}`;
