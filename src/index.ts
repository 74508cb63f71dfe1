export { SMTP } from './smtp.js';
export type { SMTPOptions, Logger, LogRecord } from './options.js';
export { formatRecord } from './log.js';
export { SMTPError } from './hooks.js';
export type { Command, Context, CommandOverrides, ReadBody, ReplyHook, HookArgs } from './context.js';
export { LMTP } from './lmtp.js';
export {
  Controller,
  UnixSocketController,
  getLocalhost,
  type ControllerOptions,
  type UnixSocketControllerOptions,
  type BaseControllerOptions,
} from './controller.js';
export {
  Session,
  Envelope,
  formatPeer,
  formatClient,
  type Peer,
  type TLSInfo,
  type MailOptions,
  type RcptOptions,
  type SessionData,
  type PeerCertificate,
} from './session.js';
export { UsageError, type Handler, type HandlerClass, type SMTPServer, type MaybePromise } from './handler.js';
export { Reply } from './replies.js';
export { Debugging, Sink, BufferedSink, Mailbox, builtinHandlers } from './handlers/index.js';
export { SizeLimitExceeded } from './body-stream.js';
export { Message, AsyncMessage, type ParsedMail, type SimpleParserOptions } from './handlers/message.js';
export { Proxy, type ProxyOptions } from './handlers/proxy.js';
export { JetStream, type JetStreamOptions } from './handlers/jetstream.js';
export type { NatsOptions } from './handlers/jetstream-options.js';
export { decodeRecord, type MailRecord, type SessionFacts } from './handlers/jetstream-record.js';
export {
  startJetStreamWorker,
  type JetStreamWorker,
  type JetStreamWorkerOptions,
  type DeliveryTarget,
  type DeliveryOutcome,
} from './jetstream-worker.js';
export { prepareMessage } from './handlers/headers.js';
export { VERSION } from './version.js';
export {
  AuthCancelled,
  AuthSyntaxError,
  verifyCramMD5,
  type AuthData,
  type AuthResult,
  type Authenticator,
} from './auth.js';
export { htpasswdAuthenticator, loadHtpasswd, parseHtpasswd, verifyPassword } from './htpasswd.js';
export { parseProxyHeader, type ProxyData, type ProxyTLV, type ProxyParse } from './proxy-protocol.js';
export type { XClientData } from './xclient.js';
export type { XForwardData, XForwardAttribute } from './xforward.js';
export {
  DsnError,
  decodeXtext,
  encodeXtext,
  parseRet,
  parseEnvid,
  parseNotify,
  parseOrcpt,
  parseMailDsn,
  parseRcptDsn,
  formatMailDsn,
  formatRcptDsn,
  type DsnRet,
  type DsnNotify,
  type DsnNotifyCondition,
  type DsnOrcpt,
  type DsnMailOptions,
  type DsnRcptOptions,
} from './dsn.js';
export { tlsRequiredNo } from './requiretls.js';
export {
  withAuthResults,
  authResultsOf,
  authResultsReady,
  authservIdOf,
  removeForgedAuthResults,
  type AuthResultsOptions,
  type AuthResults,
  type AuthResultValue,
  type SpfVerdict,
  type DkimVerdict,
  type DmarcVerdict,
  type ArcVerdict,
  type DNSResolver,
} from './authres/index.js';
export { Capture, acceptAnyAuthenticator, type CaptureOptions } from './capture/capture.js';
export { Faults, parseFaultSpec, FaultSyntaxError, type FaultRule, type FaultStage, type FaultAction, type ChaosTriggers, type ChaosTrigger } from './capture/faults.js';
export { CaptureHttpServer, type CaptureHttpOptions } from './capture/http.js';
export type { RelayOptions } from './capture/relay.js';
export { Inbox, IsolatedInbox, CaptureTimeoutError, type WaitOptions } from './capture/inbox.js';
export { CapturedMessage, type CapturedSession, type CapturedEnvelope, type AddressEntry } from './capture/message.js';
export type { Match, MatchSpec, TextMatch } from './capture/match.js';
export type { CodeOptions } from './capture/text.js';
export { htmlToText, extractLinks, findCode } from './capture/text.js';
