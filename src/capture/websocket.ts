/**
 * The server side of RFC 6455, as much as an event feed needs: the opening handshake on
 * node:http's 'upgrade', text frames out, and from the client only control frames (close, ping)
 * read; data frames are read and ignored, as Mailpit does. Frame coding is pure and apart from
 * the socket. Written here rather than taken from `ws` because the feed needs a few dozen lines
 * of it and the package has no other runtime dependency for it to share.
 */
import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
/** Largest client frame accepted (the feed expects none but control frames, of 125 bytes at most). */
const MAX_CLIENT_FRAME = 64 * 1024;
/** Outgoing bytes a slow client may leave unread before it is dropped. */
const MAX_BUFFERED = 4 * 1024 * 1024;

export const OPCODE = { text: 0x1, binary: 0x2, close: 0x8, ping: 0x9, pong: 0xa } as const;

export interface Frame {
  fin: boolean;
  opcode: number;
  payload: Buffer;
}

/** The Sec-WebSocket-Accept value for a client's key (RFC 6455 §4.2.2). */
export function acceptKey(key: string): string {
  return createHash('sha1').update(key + GUID).digest('base64');
}

/** One unmasked server frame. */
export function encodeFrame(opcode: number, payload: Buffer, fin = true): Buffer {
  const n = payload.length;
  const head = n < 126 ? Buffer.alloc(2) : n < 0x10000 ? Buffer.alloc(4) : Buffer.alloc(10);
  head[0] = (fin ? 0x80 : 0) | opcode;
  if (n < 126) head[1] = n;
  else if (n < 0x10000) {
    head[1] = 126;
    head.writeUInt16BE(n, 2);
  } else {
    head[1] = 127;
    head.writeBigUInt64BE(BigInt(n), 2);
  }
  return Buffer.concat([head, payload]);
}

export class FrameError extends Error {
  constructor(
    message: string,
    /** The close code to send (RFC 6455 §7.4.1). */
    readonly closeCode: number,
  ) {
    super(message);
  }
}

/**
 * Decodes the complete client frames at the start of `data`; returns them and the bytes left
 * over (an incomplete frame). Client frames must be masked (§5.1); reserved bits must be 0.
 */
export function decodeFrames(data: Buffer, maxPayload = MAX_CLIENT_FRAME): { frames: Frame[]; rest: Buffer } {
  const frames: Frame[] = [];
  let at = 0;
  for (;;) {
    if (data.length - at < 2) break;
    const b0 = data[at]!;
    const b1 = data[at + 1]!;
    if ((b0 & 0x70) !== 0) throw new FrameError('reserved bits set', 1002);
    if ((b1 & 0x80) === 0) throw new FrameError('client frame not masked', 1002);
    const opcode = b0 & 0x0f;
    let length = b1 & 0x7f;
    let offset = at + 2;
    if (length === 126) {
      if (data.length < offset + 2) break;
      length = data.readUInt16BE(offset);
      offset += 2;
    } else if (length === 127) {
      if (data.length < offset + 8) break;
      const big = data.readBigUInt64BE(offset);
      if (big > BigInt(maxPayload)) throw new FrameError('frame too large', 1009);
      length = Number(big);
      offset += 8;
    }
    if (length > maxPayload) throw new FrameError('frame too large', 1009);
    if (opcode >= 0x8 && (length > 125 || (b0 & 0x80) === 0)) throw new FrameError('bad control frame', 1002);
    if (data.length < offset + 4 + length) break;
    const mask = data.subarray(offset, offset + 4);
    const payload = Buffer.from(data.subarray(offset + 4, offset + 4 + length));
    for (let i = 0; i < payload.length; i++) payload[i]! ^= mask[i & 3]!;
    frames.push({ fin: (b0 & 0x80) !== 0, opcode, payload });
    at = offset + 4 + length;
  }
  return { frames, rest: data.subarray(at) };
}

/** The clients of one feed; broadcast sends a text message to each. */
export class WebSocketHub {
  private readonly clients = new Set<Duplex>();

  get size(): number {
    return this.clients.size;
  }

  /** Completes the handshake for an 'upgrade' request, or answers 400 and closes. */
  accept(request: IncomingMessage, socket: Duplex): void {
    const key = request.headers['sec-websocket-key'];
    const upgrade = (request.headers.upgrade ?? '').toLowerCase();
    if (upgrade !== 'websocket' || typeof key !== 'string' || !/^[A-Za-z0-9+/]{22}==$/.test(key) || request.headers['sec-websocket-version'] !== '13') {
      socket.end('HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{"Error":"expected a WebSocket (RFC 6455, version 13) handshake"}');
      return;
    }
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptKey(key)}\r\n\r\n`);
    this.clients.add(socket);
    let pending: Buffer = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      try {
        const { frames, rest } = decodeFrames(pending);
        pending = rest;
        for (const frame of frames) this.onFrame(socket, frame);
      } catch (error) {
        this.closeClient(socket, error instanceof FrameError ? error.closeCode : 1002);
      }
    });
    const drop = () => this.clients.delete(socket);
    socket.on('close', drop);
    socket.on('error', drop);
  }

  private onFrame(socket: Duplex, frame: Frame): void {
    if (frame.opcode === OPCODE.close) this.closeClient(socket, 1000);
    else if (frame.opcode === OPCODE.ping) socket.write(encodeFrame(OPCODE.pong, frame.payload));
  }

  private closeClient(socket: Duplex, code: number): void {
    this.clients.delete(socket);
    const payload = Buffer.alloc(2);
    payload.writeUInt16BE(code);
    socket.end(encodeFrame(OPCODE.close, payload));
  }

  broadcast(text: string): void {
    const frame = encodeFrame(OPCODE.text, Buffer.from(text, 'utf8'));
    for (const socket of this.clients) {
      // A client that reads nothing must not make the server hold every event for it.
      if (socket.writableLength > MAX_BUFFERED) socket.destroy();
      else socket.write(frame);
    }
  }

  /** Sends every client a close frame (1001: going away). */
  closeAll(): void {
    for (const socket of [...this.clients]) this.closeClient(socket, 1001);
  }
}
