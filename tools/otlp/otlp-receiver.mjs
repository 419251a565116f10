// A throwaway OTLP/HTTP trace receiver for Docket's tests: POST /v1/traces takes OTLP/protobuf
// (application/x-protobuf: decoded by the official generated code of
// @opentelemetry/otlp-transformer, then verified) or OTLP/JSON (application/json: checked for
// the OTLP/JSON mapping rules protobuf's own JSON mapping does not know — ids as hex, 64-bit
// integers as decimal strings, enums as integers, known field names — turned into the generated
// message (fromObject), encoded and decoded as protobuf), and keeps the decoded spans. GET
// /spans lists them (flattened); DELETE /spans forgets them. A payload that breaks the mapping
// (or protobuf that does not re-encode to the same bytes) is answered 400 and counted
// (GET /rejected). Usage: node otlp-receiver.mjs PORT
import http from 'node:http';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const root = require('@opentelemetry/otlp-transformer/build/src/generated/root');
const Request = root.opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest;

const port = Number(process.argv[2]);
const spans = [];
const rejected = [];

const SPAN_KEYS = new Set(['traceId', 'spanId', 'traceState', 'parentSpanId', 'flags', 'name',
  'kind', 'startTimeUnixNano', 'endTimeUnixNano', 'attributes', 'droppedAttributesCount', 'events',
  'droppedEventsCount', 'links', 'droppedLinksCount', 'status']);
const VALUE_KEYS = new Set(['stringValue', 'boolValue', 'intValue', 'doubleValue', 'arrayValue',
  'kvlistValue', 'bytesValue']);

function fail(msg) { throw new Error(msg); }
function hexId(v, len, what) {
  if (typeof v !== 'string' || !new RegExp(`^[0-9a-fA-F]{${len}}$`).test(v) || /^0+$/.test(v))
    fail(`${what}: expected ${len} hex digits, not all zero, got ${JSON.stringify(v)}`);
  return Buffer.from(v, 'hex').toString('base64');
}
function int64(v, what) {
  if (!(typeof v === 'string' && /^-?[0-9]+$/.test(v)) && !Number.isSafeInteger(v))
    fail(`${what}: expected a 64-bit integer (decimal string), got ${JSON.stringify(v)}`);
}
function checkAttrs(list, what) {
  if (list === undefined) return;
  if (!Array.isArray(list)) fail(`${what}: expected an array`);
  for (const kv of list) {
    if (typeof kv.key !== 'string' || !kv.key) fail(`${what}: a key must be a non-empty string`);
    const v = kv.value || {};
    const keys = Object.keys(v);
    if (keys.length !== 1 || !VALUE_KEYS.has(keys[0])) fail(`${what}.${kv.key}: bad AnyValue ${JSON.stringify(v)}`);
    if ('intValue' in v) int64(v.intValue, `${what}.${kv.key}`);
    if ('stringValue' in v && typeof v.stringValue !== 'string') fail(`${what}.${kv.key}: stringValue`);
  }
}
// OTLP/JSON → the protobuf JSON mapping that fromObject reads (bytes as base64).
function normalise(doc) {
  if (!Array.isArray(doc.resourceSpans)) fail('resourceSpans: expected an array');
  for (const rs of doc.resourceSpans) {
    checkAttrs(rs.resource && rs.resource.attributes, 'resource.attributes');
    for (const ss of rs.scopeSpans || fail('scopeSpans: expected an array')) {
      for (const s of ss.spans || []) {
        for (const k of Object.keys(s)) if (!SPAN_KEYS.has(k)) fail(`span: unknown field ${k}`);
        s.traceId = hexId(s.traceId, 32, 'traceId');
        s.spanId = hexId(s.spanId, 16, 'spanId');
        if (s.parentSpanId !== undefined && s.parentSpanId !== '') s.parentSpanId = hexId(s.parentSpanId, 16, 'parentSpanId');
        if (typeof s.name !== 'string' || !s.name) fail('span.name: expected a non-empty string');
        if (!Number.isInteger(s.kind) || s.kind < 0 || s.kind > 5) fail(`span.kind: expected 0-5, got ${JSON.stringify(s.kind)}`);
        int64(s.startTimeUnixNano, 'startTimeUnixNano');
        int64(s.endTimeUnixNano, 'endTimeUnixNano');
        if (BigInt(s.endTimeUnixNano) < BigInt(s.startTimeUnixNano)) fail('span ends before it starts');
        checkAttrs(s.attributes, `span ${s.name}`);
        if (s.status && s.status.code !== undefined && ![0, 1, 2].includes(s.status.code)) fail('status.code');
      }
    }
  }
  return doc;
}
function flatten(msg) {
  const obj = Request.toObject(msg, { longs: String, enums: Number, bytes: String, defaults: false });
  const hex = (b) => (b ? Buffer.from(b, 'base64').toString('hex') : '');
  const attrs = (l) => Object.fromEntries((l || []).map((kv) => [kv.key,
    kv.value.stringValue ?? (kv.value.intValue !== undefined ? Number(kv.value.intValue) : kv.value)]));
  const out = [];
  for (const rs of obj.resourceSpans || []) {
    const resource = attrs(rs.resource && rs.resource.attributes);
    for (const ss of rs.scopeSpans || []) for (const s of ss.spans || []) {
      out.push({ service: resource['service.name'], resource, traceId: hex(s.traceId), spanId: hex(s.spanId),
        parentSpanId: hex(s.parentSpanId), name: s.name, kind: s.kind || 0,
        start: s.startTimeUnixNano, end: s.endTimeUnixNano, attributes: attrs(s.attributes),
        status: (s.status && s.status.code) || 0 });
    }
  }
  return out;
}

http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const send = (code, body) => {
      res.writeHead(code, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (req.method === 'GET' && req.url === '/spans') return send(200, spans);
    if (req.method === 'GET' && req.url === '/rejected') return send(200, rejected);
    if (req.method === 'DELETE' && req.url === '/spans') { spans.length = 0; return send(200, {}); }
    if (req.method !== 'POST' || req.url !== '/v1/traces') return send(404, {});
    try {
      const type = req.headers['content-type'] || '';
      let decoded;
      if (/^application\/x-protobuf/.test(type)) {
        decoded = Request.decode(Buffer.concat(chunks));
        const err = Request.verify(decoded);
        if (err) fail(err);
        // the decoder skips what it does not know: re-encoding must give the same bytes
        if (!Buffer.from(Request.encode(decoded).finish()).equals(Buffer.concat(chunks)))
          fail('protobuf: re-encoding the decoded request gives other bytes (unknown or misplaced fields)');
      } else if (/^application\/json/.test(type)) {
        const doc = normalise(JSON.parse(Buffer.concat(chunks).toString('utf8')));
        const msg = Request.fromObject(doc);
        const err = Request.verify(msg);
        if (err) fail(err);
        decoded = Request.decode(Request.encode(msg).finish());
      } else {
        fail('Content-Type must be application/x-protobuf or application/json');
      }
      for (const s of flatten(decoded)) spans.push({ ...s, headers: req.headers });
      send(200, {});
    } catch (e) {
      rejected.push(String(e.message || e));
      send(400, { code: 3, message: String(e.message || e) });
    }
  });
}).listen(port, '127.0.0.1', () => console.log(`otlp receiver on 127.0.0.1:${port}`));
