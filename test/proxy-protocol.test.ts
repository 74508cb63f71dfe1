/**
 * Pure tests of src/proxy-protocol.ts: PROXY v1/v2 headers by example (every field, every TLV,
 * every malformation), by truncation at every length, and by a seeded fuzz/property section.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SocketAddress, isIPv4, isIPv6 } from 'node:net';
import { Rng } from './rng.js';
import {
  PROXY_V1_MAX,
  PROXY_V2_MAX,
  PROXY_V2_SIGNATURE,
  crc32c,
  parseProxyHeader,
  type ProxyData,
  type ProxyParse,
} from '../src/proxy-protocol.js';

const b = (s: string): Buffer => Buffer.from(s, 'latin1');
const show = (x: Buffer): string => JSON.stringify(x.toString('latin1'));

function ok(buf: Buffer, length = buf.length): ProxyData {
  const r = parseProxyHeader(buf);
  assert.equal(r.status, 'ok', `${show(buf)}: expected ok, got ${JSON.stringify(r)}`);
  assert.ok(r.status === 'ok');
  assert.equal(r.length, length, `${show(buf)}: header length`);
  return r.data;
}

function bad(buf: Buffer, reason?: RegExp): string {
  const r = parseProxyHeader(buf);
  assert.equal(r.status, 'invalid', `${show(buf)}: expected invalid, got ${JSON.stringify(r)}`);
  assert.ok(r.status === 'invalid');
  assert.equal(typeof r.reason, 'string');
  if (reason) assert.match(r.reason, reason);
  return r.reason;
}

function incomplete(buf: Buffer): void {
  const r = parseProxyHeader(buf);
  assert.equal(r.status, 'incomplete', `${show(buf)}: expected incomplete, got ${JSON.stringify(r)}`);
}

/** Every proper prefix of a valid header is incomplete; the whole is ok, with or without SMTP after. */
function everyPrefix(header: Buffer): ProxyData {
  for (let n = 0; n < header.length; n++) incomplete(header.subarray(0, n));
  const data = ok(header);
  const more = Buffer.concat([header, b('EHLO example.com\r\n')]);
  assert.deepEqual(ok(more, header.length), data);
  return data;
}

// ---- v2 builders --------------------------------------------------------------------------------

function tlv(type: number, value: Buffer | string): Buffer {
  const v = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
  const h = Buffer.alloc(3);
  h[0] = type;
  h.writeUInt16BE(v.length, 1);
  return Buffer.concat([h, v]);
}

interface V2 {
  cmd?: number; // low nibble of byte 12 (1 = PROXY)
  ver?: number; // high nibble of byte 12
  fam?: number; // byte 13
  addr?: Buffer;
  tlvs?: Buffer[];
  lenDelta?: number; // added to the length field only
}

function v2(o: V2 = {}): Buffer {
  const addr = o.addr ?? Buffer.alloc(0);
  const rest = Buffer.concat([addr, ...(o.tlvs ?? [])]);
  const h = Buffer.alloc(16);
  PROXY_V2_SIGNATURE.copy(h, 0);
  h[12] = ((o.ver ?? 2) << 4) | (o.cmd ?? 1);
  h[13] = o.fam ?? 0x11;
  h.writeUInt16BE(rest.length + (o.lenDelta ?? 0), 14);
  return Buffer.concat([h, rest]);
}

function inet4(src: string, dst: string, sport: number, dport: number): Buffer {
  const a = Buffer.alloc(12);
  src.split('.').forEach((x, i) => (a[i] = Number(x)));
  dst.split('.').forEach((x, i) => (a[4 + i] = Number(x)));
  a.writeUInt16BE(sport, 8);
  a.writeUInt16BE(dport, 10);
  return a;
}

function ipv6Bytes(text: string): Buffer {
  // The test's own expansion, for well-formed input only.
  const [h, t] = text.includes('::') ? text.split('::') : [text, null];
  const words = (s: string): number[] => (s === '' ? [] : s.split(':').map((x) => parseInt(x, 16)));
  const hw = words(h!);
  const tw = t === null ? [] : words(t!);
  const all = [...hw, ...new Array<number>(8 - hw.length - tw.length).fill(0), ...tw];
  const out = Buffer.alloc(16);
  all.forEach((w, i) => out.writeUInt16BE(w, 2 * i));
  return out;
}

function inet6(src: string, dst: string, sport: number, dport: number): Buffer {
  const ports = Buffer.alloc(4);
  ports.writeUInt16BE(sport, 0);
  ports.writeUInt16BE(dport, 2);
  return Buffer.concat([ipv6Bytes(src), ipv6Bytes(dst), ports]);
}

function unix(src: string, dst: string): Buffer {
  const a = Buffer.alloc(216);
  a.write(src, 0, 'utf8');
  a.write(dst, 108, 'utf8');
  return a;
}

/** Bit-at-a-time CRC32C, independent of the module's table. */
function crcRef(buf: Uint8Array): number {
  let c = 0xffffffff;
  for (const x of buf) {
    c ^= x;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  }
  return ~c >>> 0;
}

/** A header with a CRC32C TLV (first among `before` and `after`), filled in correctly. */
function withCrc(o: V2 & { before?: Buffer[]; after?: Buffer[] }): Buffer {
  const before = o.before ?? [];
  const h = v2({ ...o, tlvs: [...before, tlv(0x03, Buffer.alloc(4)), ...(o.after ?? [])] });
  const at = 16 + (o.addr?.length ?? 0) + before.reduce((n, x) => n + x.length, 0) + 3;
  h.writeUInt32BE(crcRef(h), at);
  return h;
}

// ---- CRC32C ---------------------------------------------------------------------------------

test('crc32c: the check value and agreement with a bitwise reference', () => {
  assert.equal(crc32c(b('123456789')), 0xe3069283);
  assert.equal(crcRef(b('123456789')), 0xe3069283);
  assert.equal(crc32c(Buffer.alloc(0)), 0);
  assert.equal(crc32c(Buffer.alloc(32)), 0x8a9136aa); // RFC 3720 B.4: 32 bytes of zeros
  assert.equal(crc32c(Buffer.alloc(32, 0xff)), 0x62a8ab43); // RFC 3720 B.4: 32 bytes of 0xff
  const rng = new Rng(7);
  for (let i = 0; i < 50; i++) {
    const x = rng.bytes(rng.int(0, 300));
    assert.equal(crc32c(x), crcRef(x));
  }
});

// ---- v1: valid ------------------------------------------------------------------------------

test('v1: TCP4', () => {
  const d = everyPrefix(b('PROXY TCP4 192.168.0.1 10.0.0.255 56324 25\r\n'));
  assert.deepEqual(d, {
    version: 1,
    command: 'PROXY',
    family: 'TCP4',
    srcAddress: '192.168.0.1',
    dstAddress: '10.0.0.255',
    srcPort: 56324,
    dstPort: 25,
    tlvs: [],
  });
  const e = everyPrefix(b('PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n'));
  assert.equal(e.srcAddress, '0.0.0.0');
  assert.equal(e.dstAddress, '255.255.255.255');
  assert.equal(e.srcPort, 0);
  assert.equal(e.dstPort, 65535);
});

test('v1: TCP6, addresses in the canonical form Node gives socket addresses', () => {
  const d = everyPrefix(b('PROXY TCP6 2001:DB8:0:0:0:0:0:1 ::1 1 65535\r\n'));
  assert.equal(d.family, 'TCP6');
  assert.equal(d.command, 'PROXY');
  assert.equal(d.srcAddress, '2001:db8::1');
  assert.equal(d.dstAddress, '::1');
  assert.equal(d.srcPort, 1);
  assert.equal(d.dstPort, 65535);
  const cases: Array<[string, string]> = [
    ['::', '::'],
    ['::ffff:192.0.2.1', '::ffff:192.0.2.1'],
    ['::FFFF:c000:0201', '::ffff:192.0.2.1'],
    ['1:2:3:4:5:6:7::', '1:2:3:4:5:6:7:0'],
    ['1:0:0:2:0:0:0:3', '1:0:0:2::3'],
    ['fe80::0001:0', 'fe80::1:0'],
    ['1:2:3:4:5:6:1.2.3.4', '1:2:3:4:5:6:102:304'],
    ['ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'],
  ];
  for (const [input, want] of cases) {
    const x = everyPrefix(b(`PROXY TCP6 ${input} ::2 3 4\r\n`));
    assert.equal(x.srcAddress, want, input);
    assert.equal(x.srcAddress, new SocketAddress({ address: input, family: 'ipv6' }).address);
  }
});

test('v1: UNKNOWN, with nothing or anything after it', () => {
  for (const line of [
    'PROXY UNKNOWN\r\n',
    'PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n',
    'PROXY UNKNOWN  two  spaces and \x00 junk\t\xff\r\n',
    'PROXY UNKNOWN \r\n',
  ]) {
    const d = everyPrefix(b(line));
    assert.deepEqual(d, {
      version: 1,
      command: 'PROXY',
      family: 'UNKNOWN',
      srcAddress: null,
      dstAddress: null,
      srcPort: null,
      dstPort: null,
      tlvs: [],
    });
  }
});

test('v1: exactly 107 bytes is accepted, 108 is not', () => {
  const pad = (n: number): Buffer => b('PROXY UNKNOWN ' + 'x'.repeat(n - 16) + '\r\n');
  assert.equal(pad(107).length, 107);
  assert.equal(PROXY_V1_MAX, 107);
  everyPrefix(pad(107));
  bad(pad(108), /107/);
  bad(pad(108).subarray(0, 106), /107/); // 106 bytes, no CR yet: the CR could only be byte 107
  bad(pad(108).subarray(0, 107), /107/);
  // the longest TCP6 line (104 bytes) fits
  const ff = 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff';
  const longest = b(`PROXY TCP6 ${ff} ${ff} 65535 65535\r\n`);
  assert.equal(longest.length, 104);
  everyPrefix(longest);
  // mixed notation is a valid address but makes this line too long
  const mixed = 'ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255';
  bad(b(`PROXY TCP6 ${mixed} ${mixed} 65535 65535\r\n`), /107/);
});

// ---- v1: malformed ------------------------------------------------------------------------------

const V1_BAD: string[] = [
  'PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n', // double space
  'PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n',
  'PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n',
  'PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n',
  'PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n', // trailing space
  ' PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n', // leading space
  'PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n', // extra field
  'PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n', // missing field
  'PROXY TCP4 1.2.3.4 5.6.7.8\r\n',
  'PROXY TCP4\r\n',
  'PROXY\r\n',
  'PROXY \r\n',
  'PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n', // bad IPv4
  'PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n',
  'PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n',
  'PROXY TCP4 1..3.4 5.6.7.8 1 2\r\n',
  'PROXY TCP4 1.2.3.4. 5.6.7.8 1 2\r\n',
  'PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n', // leading zero in an octet
  'PROXY TCP4 1.2.3.00 5.6.7.8 1 2\r\n',
  'PROXY TCP4 a.b.c.d 5.6.7.8 1 2\r\n',
  'PROXY TCP4 ::1 5.6.7.8 1 2\r\n', // IPv6 under TCP4
  'PROXY TCP6 1.2.3.4 ::1 1 2\r\n', // IPv4 under TCP6
  'PROXY TCP6 ::1 1:2:3:4:5:6:7:8:9 1 2\r\n', // bad IPv6
  'PROXY TCP6 ::1 1::2::3 1 2\r\n',
  'PROXY TCP6 ::1 1:::2 1 2\r\n',
  'PROXY TCP6 ::1 :1:2:3:4:5:6:7 1 2\r\n',
  'PROXY TCP6 ::1 1:2:3:4:5:6:7: 1 2\r\n',
  'PROXY TCP6 ::1 12345:: 1 2\r\n',
  'PROXY TCP6 ::1 g::1 1 2\r\n',
  'PROXY TCP6 ::1 fe80::1%eth0 1 2\r\n', // zone id
  'PROXY TCP6 ::1 [::1] 1 2\r\n',
  'PROXY TCP6 ::1 1:2:3:4:5:6:7:1.2.3.4 1 2\r\n',
  'PROXY TCP6 ::1 ::1.2.3.04 1 2\r\n',
  'PROXY TCP6 ::1 1:2:3:4:5:6:7:8:: 1 2\r\n',
  'PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n', // port out of range
  'PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n',
  'PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n', // leading zero in a port
  'PROXY TCP4 1.2.3.4 5.6.7.8 1 00\r\n',
  'PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n',
  'PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n',
  'PROXY TCP4 1.2.3.4 5.6.7.8 0x19 2\r\n',
  'PROXY TCP4 1.2.3.4 5.6.7.8 1 2', // missing CRLF, then SMTP:
  'PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n', // LF only
  'PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n',
  'PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX',
  'PROXY UNKNOWN\n',
  'PROXY UNKNOWN x\ny\r\n',
  'PROXY UNKNOWN x\ry\r\n',
  'PROXY UNKNOWNX\r\n',
  'PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n',
  'PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n',
  'PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n',
  'proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n', // lowercase signature
  'Proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n',
  'PROXY\tTCP4 1.2.3.4 5.6.7.8 1 2\r\n',
  'EHLO example.com\r\n', // a client that sent no PROXY header
  'HELO x\r\n',
];

test('v1: every malformation is invalid, decided at the first impossible byte', () => {
  for (const line of V1_BAD) {
    const buf = line.endsWith('1 2') ? b(line + 'EHLO x\r\n'.repeat(20)) : b(line);
    bad(buf);
    // Monotonic: incomplete up to some prefix, invalid from there on, never ok.
    let firstBad = -1;
    for (let n = 1; n <= buf.length; n++) {
      const r = parseProxyHeader(buf.subarray(0, n));
      assert.notEqual(r.status, 'ok', `${show(buf.subarray(0, n))} of ${show(buf)}`);
      if (firstBad < 0 && r.status === 'invalid') firstBad = n;
      if (firstBad >= 0) assert.equal(r.status, 'invalid', `${show(buf.subarray(0, n))} after invalid`);
    }
    assert.ok(firstBad > 0);
  }
  // A few exact decision points: no waiting for the CRLF when a field is already impossible.
  bad(b('X'));
  bad(b('PROXY UNKNOWN ' + 'x'.repeat(200)), /107/); // never a CRLF
  bad(b('proxy'));
  bad(b('PROXY TCP4  '), /empty/);
  bad(b('PROXY TCP4 256'), /IPv4/);
  bad(b('PROXY TCP4 01'), /IPv4/);
  bad(b('PROXY TCP4 1.2.3.4 5.6.7.8 65536'), /port/);
  bad(b('PROXY TCP4 1.2.3.4 5.6.7.8 0'.concat('1')), /port/);
  bad(b('PROXY TCP6 ::1::'), /IPv6/);
  bad(b('PROXY TCP6 1:2:3:4:5:6:7:8:'), /IPv6/);
  bad(b('PROXY TCPX'), /protocol/);
  bad(b('PROXY TCP4 1.2.3.4\n'), /LF/);
  incomplete(b('PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r'));
  incomplete(b('PROXY UNKNOWN\r'));
  bad(b('PROXY TCP4 1.2.3.4 5.6.7.8 1\r'));
  incomplete(b('PROXY TCP6 1:2:3:4:5:6:7'));
  incomplete(b('PROXY TCP6 1:2:3:4:5:6:'));
  incomplete(b('PROXY TCP6 ::ffff:1.2.'));
  incomplete(b('PROXY TCP6 :'));
  incomplete(b('PROXY TCP4 1.2.3.4 5.6.7.8 6553'));
  incomplete(b('PROX'));
  incomplete(b('P'));
  incomplete(Buffer.alloc(0));
});

test('v1: address fields agree with node:net on random complete lines', () => {
  const rng = new Rng(11);
  const alphabet = '0123456789abcdefABCDEF:.';
  for (let i = 0; i < 3000; i++) {
    const v6 = rng.int(0, 1) === 1;
    let addr: string;
    if (rng.int(0, 3) === 0) {
      addr = rng.string(alphabet, rng.int(0, 20));
    } else if (v6) {
      addr = randomIPv6Text(rng);
    } else {
      addr = Array.from({ length: 4 }, () => String(rng.int(0, 300))).join('.');
      if (rng.int(0, 5) === 0) addr = addr.replace(/^(\d)/, '0$1');
    }
    const line = b(`PROXY TCP${v6 ? 6 : 4} ${addr} ${v6 ? '::' : '0.0.0.0'} 25 25\r\n`);
    const want = v6 ? isIPv6(addr) && !addr.includes('%') : isIPv4(addr);
    const r = parseProxyHeader(line);
    if (line.length > PROXY_V1_MAX) {
      assert.equal(r.status, 'invalid');
      continue;
    }
    assert.equal(r.status, want ? 'ok' : 'invalid', `${show(line)}: ${JSON.stringify(r)}`);
    if (r.status === 'ok') {
      const canon = new SocketAddress({ address: addr, family: v6 ? 'ipv6' : 'ipv4' }).address;
      assert.equal(r.data.srcAddress, canon, addr);
      // and every proper prefix was only incomplete
      for (let n = 0; n < line.length; n++) incomplete(line.subarray(0, n));
    }
  }
});

test('v1: every short address prefix is judged as node:net would allow it to be completed', () => {
  // Exhaustive over a small alphabet: "incomplete" exactly when some completion (from a set of
  // suffixes that covers every way an IPv4/IPv6 text can go on) is valid per node:net.
  const suffixes: string[] = [];
  for (let k = 0; k <= 8; k++) {
    for (const pre of ['', '0', ':', '::', ':0', '0::', '.0', '.0.0', '.0.0.0', '0.0.0', '0.0', '::0', '0:']) {
      suffixes.push(pre + ':0'.repeat(k), pre + '.0'.repeat(Math.min(k, 3)));
    }
  }
  const alphabet = ['0', 'a', '1', ':', '.'];
  let checked = 0;
  const visit = (s: string, depth: number): void => {
    for (const v6 of [true, false]) {
      const valid = (x: string): boolean => (v6 ? isIPv6(x) && !x.includes('%') : isIPv4(x));
      const prefix = parseProxyHeader(b(`PROXY TCP${v6 ? 6 : 4} ${s}`)).status;
      const viable = valid(s) || suffixes.some((t) => valid(s + t));
      assert.equal(prefix, viable ? 'incomplete' : 'invalid', `TCP${v6 ? 6 : 4} ${JSON.stringify(s)}`);
      const line = b(`PROXY TCP${v6 ? 6 : 4} ${s} ${v6 ? '::' : '1.1.1.1'} 1 2\r\n`);
      assert.equal(parseProxyHeader(line).status, valid(s) ? 'ok' : 'invalid', show(line));
      checked++;
    }
    if (depth > 0) for (const c of alphabet) visit(s + c, depth - 1);
  };
  visit('', 5);
  assert.equal(checked, 2 * ((5 ** 6 - 1) / 4));
});

// ---- v2: valid ----------------------------------------------------------------------------------

test('v2: LOCAL, with and without TLVs; addresses ignored, family byte ignored', () => {
  const d = everyPrefix(v2({ cmd: 0, fam: 0x00 }));
  assert.deepEqual(d, {
    version: 2,
    command: 'LOCAL',
    family: 'UNKNOWN',
    srcAddress: null,
    dstAddress: null,
    srcPort: null,
    dstPort: null,
    tlvs: [],
  });
  const e = everyPrefix(v2({ cmd: 0, fam: 0x11, addr: inet4('1.2.3.4', '5.6.7.8', 1, 2) }));
  assert.equal(e.command, 'LOCAL');
  assert.equal(e.family, 'TCP4');
  assert.equal(e.srcAddress, null);
  assert.equal(e.srcPort, null);
  const f = everyPrefix(v2({ cmd: 0, fam: 0x21, addr: inet6('::1', '::2', 1, 2), tlvs: [tlv(0x05, 'id')] }));
  assert.equal(f.srcAddress, null);
  assert.deepEqual(f.uniqueId, b('id'));
  const g = everyPrefix(withCrc({ cmd: 0, fam: 0x00, after: [tlv(0x04, Buffer.alloc(5))] }));
  assert.equal(g.crc32cValid, true);
  assert.equal(g.tlvs.length, 2);
  // "discard the protocol block including the family which is ignored"
  const h = everyPrefix(v2({ cmd: 0, fam: 0x45, addr: b('opaque') }));
  assert.equal(h.family, 'UNKNOWN');
  assert.deepEqual(h.tlvs, []);
  const i = everyPrefix(v2({ cmd: 0, fam: 0x11 })); // LOCAL with a family but no addresses
  assert.equal(i.srcAddress, null);
});

test('v2: PROXY over INET (TCP and UDP)', () => {
  const d = everyPrefix(v2({ fam: 0x11, addr: inet4('192.0.2.1', '198.51.100.7', 51234, 25) }));
  assert.deepEqual(d, {
    version: 2,
    command: 'PROXY',
    family: 'TCP4',
    srcAddress: '192.0.2.1',
    dstAddress: '198.51.100.7',
    srcPort: 51234,
    dstPort: 25,
    tlvs: [],
  });
  const u = everyPrefix(v2({ fam: 0x12, addr: inet4('0.0.0.0', '255.255.255.255', 0, 65535) }));
  assert.equal(u.family, 'UDP4');
  assert.equal(u.srcAddress, '0.0.0.0');
  assert.equal(u.dstAddress, '255.255.255.255');
  assert.equal(u.srcPort, 0);
  assert.equal(u.dstPort, 65535);
});

test('v2: PROXY over INET6 (TCP and UDP), addresses as Node formats them', () => {
  const d = everyPrefix(v2({ fam: 0x21, addr: inet6('2001:db8::1', '::ffff:c000:201', 40000, 587) }));
  assert.equal(d.family, 'TCP6');
  assert.equal(d.srcAddress, '2001:db8::1');
  assert.equal(d.dstAddress, '::ffff:192.0.2.1');
  assert.equal(d.srcPort, 40000);
  assert.equal(d.dstPort, 587);
  const u = everyPrefix(v2({ fam: 0x22, addr: inet6('::', '1:0:0:2:0:0:0:3', 1, 2) }));
  assert.equal(u.family, 'UDP6');
  assert.equal(u.srcAddress, '::');
  assert.equal(u.dstAddress, '1:0:0:2::3');
  // Random addresses, rich in zero groups, against node:net's formatting.
  const rng = new Rng(3);
  for (let i = 0; i < 500; i++) {
    const a = Buffer.alloc(16);
    for (let w = 0; w < 8; w++) {
      const k = rng.int(0, 5);
      a.writeUInt16BE(k < 3 ? 0 : k === 3 ? 0xffff : rng.int(0, 0xffff), 2 * w);
    }
    const addr = Buffer.concat([a, a, Buffer.alloc(4)]);
    const x = ok(v2({ fam: 0x21, addr }));
    const words: string[] = [];
    for (let w = 0; w < 8; w++) words.push(a.readUInt16BE(2 * w).toString(16));
    assert.equal(x.srcAddress, new SocketAddress({ address: words.join(':'), family: 'ipv6' }).address);
  }
});

test('v2: PROXY over UNIX (stream and datagram): NUL-terminated paths', () => {
  const d = everyPrefix(v2({ fam: 0x31, addr: unix('/run/client.sock', '/run/smtp.sock') }));
  assert.equal(d.family, 'UNIX');
  assert.equal(d.srcAddress, '/run/client.sock');
  assert.equal(d.dstAddress, '/run/smtp.sock');
  assert.equal(d.srcPort, null);
  assert.equal(d.dstPort, null);
  const full = Buffer.alloc(216, 0x61); // no NUL at all: all 108 bytes are the path
  const u = everyPrefix(v2({ fam: 0x32, addr: full, tlvs: [tlv(0x01, 'smtp')] }));
  assert.equal(u.family, 'UNIX');
  assert.equal(u.srcAddress, 'a'.repeat(108));
  assert.equal(u.dstAddress, 'a'.repeat(108));
  assert.deepEqual(u.alpn, b('smtp'));
  const e = ok(v2({ fam: 0x31, addr: unix('', '') }));
  assert.equal(e.srcAddress, '');
});

test('v2: PROXY with UNSPEC family: no addresses, TLVs still read', () => {
  const d = everyPrefix(v2({ fam: 0x00, tlvs: [tlv(0x02, 'mx.example.com')] }));
  assert.equal(d.command, 'PROXY');
  assert.equal(d.family, 'UNKNOWN');
  assert.equal(d.srcAddress, null);
  assert.equal(d.authority, 'mx.example.com');
});

test('v2: every TLV kind, in order, raw and decoded', () => {
  const ssl = Buffer.concat([
    Buffer.from([0x07, 0x00, 0x00, 0x00, 0x00]),
    tlv(0x21, 'TLSv1.3'),
    tlv(0x22, 'Jöhn Døe'),
    tlv(0x23, 'TLS_AES_256_GCM_SHA384'),
    tlv(0x24, 'RSA-SHA256'),
    tlv(0x25, 'RSA2048'),
    tlv(0x2f, 'unknown sub-type, skipped'),
  ]);
  const tlvs = [
    tlv(0x01, 'smtp'),
    tlv(0x02, 'mail.exämple.com'),
    tlv(0x04, Buffer.alloc(3)),
    tlv(0x05, Buffer.alloc(128, 0xab)),
    tlv(0x20, ssl),
    tlv(0x30, 'blue'),
    tlv(0xea, Buffer.from([1, 0x76, 0x70, 0x63])), // AWS-style custom TLV: kept raw
    tlv(0x04, Buffer.alloc(0)), // NOOP may repeat
    tlv(0xea, Buffer.alloc(0)), // unknown types may repeat
  ];
  const h = withCrc({ fam: 0x11, addr: inet4('10.1.2.3', '10.4.5.6', 1000, 25), after: tlvs });
  const d = everyPrefix(h);
  assert.equal(d.srcAddress, '10.1.2.3');
  assert.deepEqual(
    d.tlvs.map((t) => t.type),
    [0x03, 0x01, 0x02, 0x04, 0x05, 0x20, 0x30, 0xea, 0x04, 0xea],
  );
  assert.deepEqual(d.tlvs[5]!.value, ssl);
  assert.deepEqual(d.tlvs[7]!.value, Buffer.from([1, 0x76, 0x70, 0x63]));
  assert.deepEqual(d.alpn, b('smtp'));
  assert.equal(d.authority, 'mail.exämple.com');
  assert.deepEqual(d.uniqueId, Buffer.alloc(128, 0xab));
  assert.equal(d.netns, 'blue');
  assert.equal(d.crc32cValid, true);
  assert.deepEqual(d.ssl, {
    client: 7,
    verify: 0,
    version: 'TLSv1.3',
    cn: 'Jöhn Døe',
    cipher: 'TLS_AES_256_GCM_SHA384',
    sigAlg: 'RSA-SHA256',
    keyAlg: 'RSA2048',
  });
  // Values are copies: reusing the input buffer does not change the result.
  const copy = Buffer.from(h);
  const r = ok(copy);
  copy.fill(0);
  assert.deepEqual(r.alpn, b('smtp'));
  assert.deepEqual(r.tlvs[1]!.value, b('smtp'));
});

test('v2: SSL TLV: bare (client and verify only), and verify as an unsigned 32-bit number', () => {
  const d = ok(v2({ fam: 0x11, addr: inet4('1.1.1.1', '2.2.2.2', 1, 2), tlvs: [tlv(0x20, Buffer.from([1, 0xff, 0xff, 0xff, 0xfe]))] }));
  assert.deepEqual(d.ssl, { client: 1, verify: 0xfffffffe });
  bad(v2({ fam: 0x11, addr: inet4('1.1.1.1', '2.2.2.2', 1, 2), tlvs: [tlv(0x20, Buffer.from([1, 0, 0, 0]))] }), /SSL/);
  // a truncated sub-TLV inside the SSL TLV
  const sub = Buffer.concat([Buffer.from([1, 0, 0, 0, 0]), tlv(0x21, 'TLSv1.2').subarray(0, 5)]);
  bad(v2({ fam: 0x00, tlvs: [tlv(0x20, sub)] }), /SSL/);
  const dup = Buffer.concat([Buffer.from([1, 0, 0, 0, 0]), tlv(0x22, 'a'), tlv(0x22, 'b')]);
  bad(v2({ fam: 0x00, tlvs: [tlv(0x20, dup)] }), /duplicate/);
  const badCn = Buffer.concat([Buffer.from([1, 0, 0, 0, 0]), tlv(0x22, Buffer.from([0xc3, 0x28]))]);
  bad(v2({ fam: 0x00, tlvs: [tlv(0x20, badCn)] }), /UTF-8/);
});

test('v2: CRC32C valid, invalid, anywhere among the TLVs, and of the wrong size', () => {
  const addr = inet6('2001:db8::5', '2001:db8::6', 1, 2);
  const before = [tlv(0x01, 'h2'), tlv(0x05, 'xyz')];
  const after = [tlv(0x30, 'ns')];
  const h = withCrc({ fam: 0x21, addr, before, after });
  const d = everyPrefix(h);
  assert.equal(d.crc32cValid, true);
  assert.deepEqual(d.tlvs.map((t) => t.type), [0x01, 0x05, 0x03, 0x30]);
  // Any single bit flip anywhere in the header is either caught by structure or by the CRC.
  const crcType = 16 + 36 + before[0]!.length + before[1]!.length; // its type byte: a flip there
  for (let i = 0; i < h.length; i++) {             // turns the CRC into an unchecked TLV
    if (i === crcType) continue;
    for (let bit = 0; bit < 8; bit++) {
      const m = Buffer.from(h);
      m[i]! ^= 1 << bit;
      const r = parseProxyHeader(m);
      assert.notEqual(r.status, 'ok', `flip byte ${i} bit ${bit}`);
    }
  }
  const wrong = Buffer.from(h);
  const at = crcType + 3;
  wrong.writeUInt32BE((wrong.readUInt32BE(at) + 1) >>> 0, at);
  bad(wrong, /CRC32C/);
  bad(v2({ fam: 0x00, tlvs: [tlv(0x03, Buffer.alloc(3))] }), /CRC32C/);
  bad(v2({ fam: 0x00, tlvs: [tlv(0x03, Buffer.alloc(5))] }), /CRC32C/);
  // Two CRC TLVs: ambiguous, refused.
  const two = v2({ fam: 0x00, tlvs: [tlv(0x03, Buffer.alloc(4)), tlv(0x03, Buffer.alloc(4))] });
  bad(two, /duplicate/);
  // LOCAL headers are checked too.
  const local = withCrc({ cmd: 0, fam: 0x00 });
  assert.equal(ok(local).crc32cValid, true);
  local[local.length - 1]! ^= 0x80;
  bad(local, /CRC32C/);
});

test('v2: the largest header accepted is PROXY_V2_MAX; one byte more is refused at once', () => {
  const max = v2({ fam: 0x11, addr: inet4('1.2.3.4', '5.6.7.8', 1, 2), tlvs: [tlv(0xe0, Buffer.alloc(PROXY_V2_MAX - 16 - 12 - 3))] });
  assert.equal(max.length, PROXY_V2_MAX);
  const d = ok(max);
  assert.equal(d.tlvs[0]!.value.length, PROXY_V2_MAX - 31);
  incomplete(max.subarray(0, PROXY_V2_MAX - 1));
  const over = v2({ fam: 0x11, addr: inet4('1.2.3.4', '5.6.7.8', 1, 2), tlvs: [tlv(0xe0, Buffer.alloc(PROXY_V2_MAX - 16 - 12 - 2))] });
  bad(over.subarray(0, 16), /longer/);
  bad(over, /longer/);
  const h = v2({ fam: 0x00 });
  h.writeUInt16BE(0xffff, 14);
  bad(h, /longer/);
});

// ---- v2: malformed ------------------------------------------------------------------------------

test('v2: bad signature, version, command, family; short address blocks; bad TLVs', () => {
  const good = v2({ fam: 0x11, addr: inet4('1.2.3.4', '5.6.7.8', 1, 2) });
  for (let i = 0; i < 12; i++) {
    const m = Buffer.from(good);
    m[i]! ^= 0x20;
    bad(m, i === 0 ? /./ : /signature/);
    bad(m.subarray(0, i + 1)); // decided at the first wrong byte
  }
  for (const ver of [0, 1, 3, 0xf]) bad(v2({ ver, addr: inet4('1.2.3.4', '5.6.7.8', 1, 2) }).subarray(0, 13), /version/);
  for (const cmd of [2, 3, 0xf]) bad(v2({ cmd }).subarray(0, 13), /command/);
  for (const fam of [0x01, 0x02, 0x10, 0x13, 0x20, 0x23, 0x30, 0x33, 0x41, 0x42, 0xff]) {
    bad(v2({ fam, addr: Buffer.alloc(216) }).subarray(0, 14), /family/);
  }
  // PROXY whose length cannot hold the addresses: refused as soon as the length is known.
  for (const [fam, size] of [[0x11, 12], [0x12, 12], [0x21, 36], [0x22, 36], [0x31, 216], [0x32, 216]] as const) {
    const h = v2({ fam, addr: Buffer.alloc(size - 1) });
    bad(h.subarray(0, 16), /address/);
    ok(v2({ fam, addr: Buffer.alloc(size) }));
  }
  // TLV area that does not parse exactly
  const a = inet4('1.2.3.4', '5.6.7.8', 1, 2);
  bad(v2({ addr: a, tlvs: [Buffer.from([0x04])] }), /truncated/);
  bad(v2({ addr: a, tlvs: [Buffer.from([0x04, 0x00])] }), /truncated/);
  bad(v2({ addr: a, tlvs: [Buffer.from([0x04, 0x00, 0x02, 0x00])] }), /truncated/);
  bad(v2({ addr: a, tlvs: [tlv(0x04, 'ok'), Buffer.from([0x01, 0x00, 0x05, 0x61])] }), /truncated/);
  // a TLV whose length runs past the header's length (but not past the buffer)
  const over = Buffer.concat([v2({ addr: a, tlvs: [tlv(0x04, 'abcd')], lenDelta: -2 }), b('EHLO x\r\n')]);
  bad(over, /truncated/);
  bad(v2({ addr: a, tlvs: [tlv(0x05, Buffer.alloc(129))] }), /UNIQUE_ID/);
  ok(v2({ addr: a, tlvs: [tlv(0x05, Buffer.alloc(0))] }));
  bad(v2({ addr: a, tlvs: [tlv(0x02, Buffer.from([0xff, 0xfe]))] }), /AUTHORITY/);
  for (const t of [0x01, 0x02, 0x05, 0x20, 0x30]) {
    const v = t === 0x20 ? Buffer.alloc(5) : b('x');
    bad(v2({ addr: a, tlvs: [tlv(t, v), tlv(t, v)] }), /duplicate/);
  }
});

test('v2: a header longer than its length field leaves the rest to SMTP', () => {
  const h = v2({ fam: 0x11, addr: inet4('1.2.3.4', '5.6.7.8', 1, 2) });
  const x = Buffer.concat([h, PROXY_V2_SIGNATURE]); // even another header's bytes are SMTP's
  assert.equal(ok(x, h.length).srcAddress, '1.2.3.4');
});

// ---- fuzz / properties ------------------------------------------------------------------------


function randomIPv6Text(rng: Rng): string {
  const groups = Array.from({ length: 8 }, () => (rng.int(0, 2) === 0 ? '0' : rng.int(0, 0xffff).toString(16)));
  let s = groups.join(':');
  if (rng.int(0, 1) === 1) {
    const start = rng.int(0, 7);
    const len = rng.int(1, 8 - start);
    s = [...groups.slice(0, start), '', ...groups.slice(start + len)].join(':');
    if (start === 0) s = ':' + s;
    if (start + len === 8) s = s + ':';
  }
  if (rng.int(0, 4) === 0) s = s.replace(/[0-9a-f]+:[0-9a-f]+$/, '1.2.3.4');
  if (rng.int(0, 4) === 0) s = s.toUpperCase();
  return s;
}

function randomValidV1(rng: Rng): Buffer {
  const port = (): number => rng.pick([0, 1, 25, 587, 65535, rng.int(0, 65535)]);
  switch (rng.int(0, 2)) {
    case 0: {
      const ip = (): string => Array.from({ length: 4 }, () => rng.int(0, 255)).join('.');
      return b(`PROXY TCP4 ${ip()} ${ip()} ${port()} ${port()}\r\n`);
    }
    case 1: {
      for (;;) {
        const x = b(`PROXY TCP6 ${randomIPv6Text(rng)} ${randomIPv6Text(rng)} ${port()} ${port()}\r\n`);
        if (x.length <= PROXY_V1_MAX && parseProxyHeader(x).status === 'ok') return x;
      }
    }
    default:
      return b(`PROXY UNKNOWN${rng.int(0, 1) ? ' ' + rng.string('abc :.19', rng.int(0, 80)) : ''}\r\n`);
  }
}

function randomValidV2(rng: Rng): Buffer {
  const fam = rng.pick([0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32]);
  const size = [0, 12, 36, 216][fam >> 4]!;
  const tlvs: Buffer[] = [];
  const n = rng.int(0, 4);
  for (let i = 0; i < n; i++) {
    const t = rng.pick([0x04, 0xe1, 0xf0, 0x30 + 0x100]); // 0x130: marks "NETNS once"
    if (t === 0x130) {
      if (!tlvs.some((x) => x[0] === 0x30)) tlvs.push(tlv(0x30, rng.string('abc', rng.int(0, 5))));
    } else {
      tlvs.push(tlv(t, rng.bytes(rng.int(0, 20))));
    }
  }
  if (rng.int(0, 2) === 0) tlvs.push(tlv(0x20, Buffer.concat([rng.bytes(5), tlv(0x21, 'TLSv1.3')])));
  const o: V2 = { cmd: rng.int(0, 1), fam, addr: rng.bytes(size), tlvs };
  return rng.int(0, 1) ? withCrc({ ...o, after: tlvs }) : v2(o);
}

function mutate(rng: Rng, x: Buffer): Buffer {
  const m = Buffer.from(x);
  switch (rng.int(0, 6)) {
    case 0: // bit flips
      for (let k = rng.int(1, 3); k > 0 && m.length > 0; k--) m[rng.int(0, m.length - 1)]! ^= 1 << rng.int(0, 7);
      return m;
    case 1: // truncation
      return m.subarray(0, rng.int(0, m.length));
    case 2: // v2 length-field change
      if (m.length >= 16) m.writeUInt16BE(rng.pick([0, 1, 11, 12, 35, 36, 215, 216, 0xffff, rng.int(0, 0xffff), (m.readUInt16BE(14) + rng.int(-4, 4)) & 0xffff]), 14);
      return m;
    case 3: // byte replaced by an interesting one
      if (m.length > 0) m[rng.int(0, m.length - 1)] = rng.pick([0x00, 0x0a, 0x0d, 0x20, 0x2e, 0x30, 0x3a, 0xff]);
      return m;
    case 4: { // insertion
      const at = rng.int(0, m.length);
      return Buffer.concat([m.subarray(0, at), rng.bytes(rng.int(1, 4)), m.subarray(at)]);
    }
    case 5: { // deletion
      const at = rng.int(0, m.length);
      return Buffer.concat([m.subarray(0, at), m.subarray(Math.min(m.length, at + rng.int(1, 4)))]);
    }
    default: // trailing bytes
      return Buffer.concat([m, rng.bytes(rng.int(1, 200))]);
  }
}

/** The invariants every answer must satisfy. */
function check(input: Buffer): ProxyParse {
  let r: ProxyParse;
  try {
    r = parseProxyHeader(input);
  } catch (e) {
    assert.fail(`threw on ${input.toString('hex')}: ${String(e)}`);
  }
  assert.ok(['ok', 'incomplete', 'invalid'].includes(r.status));
  const limit = input[0] === 0x50 ? PROXY_V1_MAX : PROXY_V2_MAX;
  if (r.status === 'incomplete') {
    assert.ok(input.length < limit, `incomplete at ${input.length} bytes: ${input.toString('hex')}`);
  }
  if (r.status === 'invalid') assert.ok(r.reason.length > 0);
  if (r.status === 'ok') {
    assert.ok(r.length > 0 && r.length <= input.length, 'length within the input');
    assert.ok(r.length <= limit);
    assert.ok(r.data.version === 1 || r.data.version === 2);
    // The verdict depends on the header's bytes only, and every proper prefix was incomplete.
    const again = parseProxyHeader(input.subarray(0, r.length));
    assert.equal(again.status, 'ok');
    assert.deepEqual(again, r);
    const cut = rngForChecks.int(0, r.length - 1);
    assert.equal(parseProxyHeader(input.subarray(0, cut)).status, 'incomplete', `prefix ${cut} of ${input.toString('hex')}`);
  }
  return r;
}
const rngForChecks = new Rng(99);

test('fuzz: random bytes and mutations of valid headers never break the invariants', () => {
  const rng = new Rng(0x5eed);
  const deadline = Date.now() + 4000;
  const counts = { ok: 0, incomplete: 0, invalid: 0 };
  for (let i = 0; i < 5000 && Date.now() < deadline; i++) {
    let input: Buffer;
    const kind = i % 5;
    if (kind === 0) {
      input = rng.bytes(rng.int(0, 300));
      if (rng.int(0, 1)) input[0] = rng.pick([0x50, 0x0d]);
    } else if (kind === 1) {
      const prefix = rng.int(0, 1) ? PROXY_V2_SIGNATURE : b('PROXY ');
      input = Buffer.concat([prefix, rng.bytes(rng.int(0, 250))]);
    } else {
      const base = kind === 2 ? randomValidV1(rng) : randomValidV2(rng);
      assert.equal(check(base).status, 'ok', show(base));
      input = base;
      for (let k = rng.int(1, 3); k > 0; k--) input = mutate(rng, input);
    }
    const r = check(input);
    counts[r.status]++;
    // Invalid stays invalid whatever follows; incomplete never turns into a different header.
    if (r.status === 'invalid') {
      assert.equal(parseProxyHeader(Buffer.concat([input, rng.bytes(rng.int(1, 64))])).status, 'invalid');
    }
    // Oversized inputs: incomplete is impossible.
    if (r.status === 'incomplete') {
      const grown = Buffer.concat([input, Buffer.alloc(PROXY_V2_MAX, 0x41)]);
      assert.notEqual(check(grown).status, 'incomplete');
    }
  }
  // The generators reach every verdict.
  assert.ok(counts.ok > 100 && counts.incomplete > 50 && counts.invalid > 500, JSON.stringify(counts));
});

test('fuzz: every prefix of random valid headers is incomplete, in one and in many chunks', () => {
  const rng = new Rng(42);
  for (let i = 0; i < 300; i++) {
    const h = rng.int(0, 1) ? randomValidV1(rng) : randomValidV2(rng);
    const want = parseProxyHeader(h);
    assert.equal(want.status, 'ok');
    for (let n = 0; n < h.length; n++) {
      const r = parseProxyHeader(h.subarray(0, n));
      assert.equal(r.status, 'incomplete', `${n}/${h.length}: ${h.toString('hex')}`);
    }
  }
});
