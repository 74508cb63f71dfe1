/** Server start-up from the checked arguments: the listeners, the capture's HTTP side, signals, the stop. */
import cluster from 'node:cluster';
import { Controller, UnixSocketController } from './controller.js';
import { notice, stderrLogger } from './cli-log.js';
import { VERSION } from './version.js';
import type { ListeningMessage } from './workers.js';
import { Capture } from './capture/capture.js';
import { startCaptureHttp } from './capture/cli.js';
import { hostPort } from './cli-addresses.js';
import type { Args } from './cli-args.js';
import { readPair, type Prepared } from './cli-config.js';
import { dropPrivileges } from './cli-privileges.js';

/** Listens as the arguments say and serves until SIGINT/SIGTERM; the exit code. */
export async function serve(args: Args, prepared: Prepared): Promise<number> {
  const logger = stderrLogger(args.debug, args.logFormat);
  const common = {
    dataSizeLimit: args.size,
    dataLineLimit: args.dataLineLimit,
    enableSMTPUTF8: args.smtputf8,
    lmtp: args.lmtp,
    logger,
    tlsContext: prepared.starttls,
    // aiosmtpd: with a STARTTLS certificate, TLS is required unless --no-requiretls.
    requireStartTLS: prepared.starttls !== undefined && args.requireTLS,
    tls: prepared.smtps,
    authenticator: prepared.authenticator,
    authRequired: args.authRequired,
    authRequireTLS: !args.capture.authAllowInsecure,
    proxyProtocolTimeout: args.proxyProtocol === null ? undefined : args.proxyProtocol * 1000,
    xclientAllow: args.xclientAllow,
    xforwardAllow: args.xforwardAllow,
    enableDSN: args.dsn,
    offerRequireTLS: args.offerRequireTLS,
    acceptUnknownParameters: args.acceptUnknownParameters,
  };
  // (label, controller) pairs. "localhost" means both loopbacks, so clients that resolve it
  // either way find the server; the ::1 half is optional (a machine may have no IPv6).
  const planned: Array<{ label: string; controller: Controller | UnixSocketController; optional: boolean }> = [];
  if (args.unix !== null) {
    planned.push({
      label: args.unix,
      controller: new UnixSocketController(prepared.handler, { ...common, unixSocket: args.unix, mode: args.unixMode }),
      optional: false,
    });
  }
  if (args.unix === null || args.listen) {
    const hosts = args.host === 'localhost' ? ['127.0.0.1', '::1'] : [args.host];
    for (const host of hosts) {
      planned.push({
        label: hostPort(host, args.port),
        controller: new Controller(prepared.handler, { ...common, hostname: host, port: args.port }),
        optional: host === '::1' && hosts.length > 1,
      });
    }
  }
  const started: typeof planned = [];
  for (const entry of planned) {
    try {
      await entry.controller.start();
      // With port 0 the label names the port the system picked.
      const c = entry.controller;
      if (c instanceof Controller && c.hostname !== undefined) entry.label = hostPort(c.hostname, c.port);
      started.push(entry);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (entry.optional && (code === 'EADDRNOTAVAIL' || code === 'EAFNOSUPPORT')) continue;
      process.stderr.write(`tsmtpd: error: cannot listen on ${entry.label}: ${(error as Error).message}\n`);
      await Promise.all(started.map((e) => e.controller.stop()));
      return 1;
    }
  }
  let captureHttp: Awaited<ReturnType<typeof startCaptureHttp>>['http'] | null = null;
  if (prepared.handler instanceof Capture) {
    try {
      const { http, warning } = await startCaptureHttp(prepared.handler, args.capture);
      captureHttp = http;
      if (warning !== null) process.stderr.write(`tsmtpd: warning: ${warning}\n`);
    } catch (error) {
      process.stderr.write(`tsmtpd: error: cannot start the capture's HTTP side on ${args.capture.httpHost}:${args.capture.httpPort}: ${(error as Error).message}\n`);
      await Promise.all(started.map((e) => e.controller.stop()));
      return 1;
    }
  }
  if (args.setuid) dropPrivileges();
  const what = args.lmtp ? 'LMTP' : 'SMTP';
  const where = started.map((e) => e.label).join(', ');
  if (cluster.isWorker) {
    process.send?.({ tsmtpd: 'listening', where } satisfies ListeningMessage);
  } else {
    notice(args.logFormat, `tsmtpd ${VERSION} (${what}) listening on ${where} (handler ${args.classpath})`);
    if (captureHttp !== null) notice(args.logFormat, `tsmtpd: web UI and API on ${captureHttp.url}`);
  }

  // SIGHUP re-reads the certificates: renewed ones take effect without a restart.
  process.on('SIGHUP', () => {
    try {
      const fresh = {
        tlsContext: readPair(args.tlscert, args.tlskey, '--tlscert and --tlskey'),
        tls: readPair(args.smtpscert, args.smtpskey, '--smtpscert and --smtpskey'),
      };
      for (const e of started) e.controller.reloadTLS(fresh);
      notice(args.logFormat, 'tsmtpd: certificates reloaded');
    } catch (error) {
      notice(args.logFormat, `tsmtpd: certificate reload failed, keeping the old ones: ${(error as Error).message}`, 'warn');
    }
  });
  await new Promise<void>((resolve) => {
    // `on`, not `once`: a second signal (the cluster primary forwarding one, systemd's
    // KillMode) must not fall through to the default action and cut the graceful stop short.
    process.on('SIGINT', resolve);
    process.on('SIGTERM', resolve);
  });
  // Stop accepting; let transactions in flight finish up to the deadline, then 421.
  await Promise.all([...started.map((e) => e.controller.stop({ deadline: args.shutdownTimeout * 1000 })), captureHttp?.stop()]);
  return 0;
}
