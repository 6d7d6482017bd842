'use strict';
/**
 * The Lambda Runtime API client of the router's Node bootstrap: HTTP/1.1 over one keep-alive `net`
 * socket per lane, no `http` module (it costs start-up time and a few microseconds per request).
 *
 * A lane sends requests in order and reads their answers in order, so a result and the next
 * `/invocation/next` go out in one write (`postThenNext`): one round trip per invocation. The socket
 * is referenced only while an answer is awaited: while a handler runs it does not keep the event
 * loop alive, so Node's `beforeExit` fires when the function's own work is done (Lambda's
 * callbackWaitsForEmptyEventLoop). The router's Runtime API always answers with Content-Length.
 */

const net = require('net');

const API = '/2018-06-01/runtime';
const HEAD_END = Buffer.from('\r\n\r\n');
const ERROR_TYPE_HEADER = 'Lambda-Runtime-Function-Error-Type';

class RuntimeApiError extends Error {}

function parseAddress(address) {
  if (!address) {
    throw new RuntimeApiError('AWS_LAMBDA_RUNTIME_API is not set');
  }
  const colon = address.lastIndexOf(':');
  let host = address.slice(0, colon);
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  const port = Number(address.slice(colon + 1));
  if (colon < 0 || !Number.isInteger(port)) {
    throw new RuntimeApiError(`AWS_LAMBDA_RUNTIME_API must be host:port, got ${address}`);
  }
  return { host, port };
}

function parseHead(text) {
  const lines = text.split('\r\n');
  const status = Number(lines[0].split(' ', 2)[1]);
  const headers = {};
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i];
    const colon = line.indexOf(':');
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  const length = headers['content-length'];
  return {
    status,
    headers,
    length: length === undefined ? 0 : Number(length),
    close: (headers.connection || '').toLowerCase() === 'close',
  };
}

function headerValue(value) {
  return String(value).replace(/[\r\n]/g, ' ');
}

class Lane {
  constructor(address) {
    const { host, port } = parseAddress(address);
    this.host = host;
    this.port = port;
    this.sock = null;
    this.pending = []; // requests written on `sock`, oldest first, each awaiting its answer
    this.chunks = [];
    this.size = 0;
    this.head = null; // head of the answer being read
    this.hostLine = `Host: ${address}\r\n`;
    this.nextText = `GET ${API}/invocation/next HTTP/1.1\r\n${this.hostLine}\r\n`;
  }

  /** Open the connection now (before the function's code loads, to overlap the two). */
  connect() {
    if (this.sock === null) this._connect();
  }

  _connect() {
    const sock = net.connect({ host: this.host, port: this.port, noDelay: true });
    sock.on('data', (data) => this._data(sock, data));
    sock.on('error', (err) => {
      sock.lastError = err;
    });
    sock.on('close', () => this._detach(sock));
    sock.unref();
    this.sock = sock;
    this.chunks = [];
    this.size = 0;
    this.head = null;
  }

  _write(requests, text) {
    if (this.sock === null) this._connect();
    if (this.pending.length === 0) this.sock.ref();
    for (const request of requests) this.pending.push(request);
    this.sock.write(text);
  }

  /** GET /invocation/next: resolves with {status, headers, body} (body a Buffer). */
  next() {
    return new Promise((resolve, reject) => {
      const request = { text: this.nextText, resolve, reject, idempotent: true };
      this._write([request], request.text);
    });
  }

  _postText(path, body, headers) {
    let text = `POST ${path} HTTP/1.1\r\n${this.hostLine}Content-Type: application/json\r\n`
      + `Content-Length: ${Buffer.byteLength(body)}\r\n`;
    if (headers !== undefined) {
      for (const name of Object.keys(headers)) text += `${name}: ${headerValue(headers[name])}\r\n`;
    }
    return text + '\r\n' + body;
  }

  /** POST `body` (a JSON string) to `path`; resolves with the answer. */
  post(path, body, headers) {
    return new Promise((resolve, reject) => {
      const text = this._postText(path, body, headers);
      this._write([{ text, resolve, reject, idempotent: false }], text);
    });
  }

  /** POST a result and ask for the next event in the same write; resolves with the next event. */
  postThenNext(path, body, headers) {
    return new Promise((resolve, reject) => {
      const text = this._postText(path, body, headers);
      const posted = { text, resolve: noop, reject: noop, idempotent: false };
      const next = { text: this.nextText, resolve, reject, idempotent: true };
      this._write([posted, next], text + this.nextText);
    });
  }

  _data(sock, data) {
    if (sock !== this.sock) return;
    this.chunks.push(data);
    this.size += data.length;
    while (this.pending.length > 0) {
      if (this.head === null) {
        const buf = this._joined();
        const end = buf.indexOf(HEAD_END);
        if (end < 0) return;
        this.head = parseHead(buf.toString('latin1', 0, end));
        this._take(end + 4);
      }
      const head = this.head;
      if (this.size < head.length) return;
      const body = this._take(head.length);
      this.head = null;
      const request = this.pending.shift();
      if (this.pending.length === 0) sock.unref();
      if (head.close) this._detach(sock);
      request.resolve({ status: head.status, headers: head.headers, body });
      if (this.sock !== sock) return;
    }
  }

  _joined() {
    if (this.chunks.length > 1) this.chunks = [Buffer.concat(this.chunks, this.size)];
    return this.chunks.length === 1 ? this.chunks[0] : Buffer.alloc(0);
  }

  /** Remove and return the first `n` unread bytes. */
  _take(n) {
    const buf = this._joined();
    const taken = buf.subarray(0, n);
    const rest = buf.subarray(n);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.size = rest.length;
    return taken;
  }

  /** The connection is gone (or going): resend what may be resent, fail the rest. */
  _detach(sock) {
    if (sock !== this.sock) return;
    this.sock = null;
    sock.destroy();
    const pending = this.pending;
    this.pending = [];
    for (const request of pending) {
      if (request.idempotent && !request.resent) {
        request.resent = true;
        this._write([request], request.text);
      } else {
        const cause = sock.lastError ? `: ${sock.lastError.message}` : '';
        request.reject(new RuntimeApiError(
          `runtime API ${this.host}:${this.port} closed the connection${cause}`));
      }
    }
  }
}

function noop() {}

function responsePath(id) {
  return `${API}/invocation/${encodeURIComponent(id)}/response`;
}

function errorPath(id) {
  return `${API}/invocation/${encodeURIComponent(id)}/error`;
}

module.exports = {
  API,
  ERROR_TYPE_HEADER,
  Lane,
  RuntimeApiError,
  errorPath,
  parseAddress,
  responsePath,
};
