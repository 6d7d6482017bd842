'use strict';
/**
 * The Lambda Runtime API client of the router's Node bootstrap: HTTP/1.1, no `http` module (it costs
 * start-up time and a few microseconds per request), over one of two transports:
 * - `FdLane`: a socket the router handed to this process when it started it (fd `_ROUTER_RUNTIME_FD`),
 *   already connected and already known to the router as this environment's: no connection to make,
 *   and no `net` module to load before the first result is written (~4 ms of a cold start). Until then,
 *   requests are written synchronously (as Lambda's client posts a result) and answers read on libuv's
 *   thread pool (`fs.read`, as Lambda's client waits for `/next`: an AsyncWorker).
 * - `Lane`: one keep-alive `net` socket to AWS_LAMBDA_RUNTIME_API (each lane of a multi-concurrent
 *   environment, a runtime started without the fd).
 *
 * A lane sends requests in order and reads their answers in order, so a result and the next
 * `/invocation/next` go out in one write (`postThenNext`): one round trip per invocation. The lane keeps
 * the event loop alive only while an answer is awaited: while a handler runs it does not, so Node's
 * `beforeExit` fires when the function's own work is done (Lambda's callbackWaitsForEmptyEventLoop).
 * The router's Runtime API always answers with Content-Length.
 */

const fs = require('fs');

let net = null; // loaded by the first TCP lane only (~2-3 ms of a cold start)

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
    if (net === null) net = require('net');
    const sock = net.connect({ host: this.host, port: this.port, noDelay: true });
    this._attach(sock);
    sock.unref();
  }

  /** Read answers from `sock`, this lane's connection from now on. */
  _attach(sock) {
    sock.on('data', (data) => this._data(sock, data));
    sock.on('error', (err) => {
      sock.lastError = err;
    });
    sock.on('close', () => this._detach(sock));
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
      if (this.pending.length === 0) this._idle(sock);
      if (head.close) this._detach(sock);
      request.resolve({ status: head.status, headers: head.headers, body });
      if (this.sock !== sock) return;
    }
  }

  /** No answer is awaited any more: let the event loop end without this lane. */
  _idle(sock) {
    sock.unref();
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

const READ_SIZE = 65536;

/**
 * A lane over the socket the router handed to this process at its start (see the module doc).
 *
 * Until the first event has come, requests are written synchronously and answers read on libuv's thread
 * pool (`fs.read`, a read in flight keeps the event loop alive), so a cold start loads no `net`. With the
 * first result, written at once, the fd becomes a `net` socket like a TCP lane's (the event loop reads
 * it, a thread pool hop less per invocation; `net` loads once the result is on its way). When that
 * connection ends (the router closes it after refusing a response, or a write fails), the lane goes on
 * over TCP as a `Lane`, resending what may be resent.
 */
class FdLane extends Lane {
  constructor(address, fd) {
    super(address);
    this.fd = fd; // -1 once closed or handed to a `net` socket
    this.sock = this; // the connection `_data` and `_detach` are told about: this, then a `net` socket
    this.reading = false;
    this.answered = false; // an answer came over the thread pool (the init's /next)
  }

  connect() {
    if (this.sock !== this) super.connect();
  }

  _write(requests, text) {
    if (this.sock !== this) { // a `net` socket over the fd, or TCP once that connection ended
      super._write(requests, text);
      return;
    }
    for (const request of requests) this.pending.push(request);
    const data = Buffer.from(text, 'utf8');
    let offset = 0;
    try {
      while (offset < data.length) offset += fs.writeSync(this.fd, data, offset);
    } catch (err) {
      this.lastError = err;
      this._detach(this);
      return;
    }
    if (this.answered && !this.reading) {
      if (net === null) net = require('net');
      const sock = new net.Socket({ fd: this.fd, readable: true, writable: true });
      this.fd = -1;
      this._attach(sock); // referenced: an answer is awaited
    } else {
      this._read();
    }
  }

  _read() {
    if (this.reading || this.fd < 0 || this.pending.length === 0) return;
    this.reading = true;
    const buf = Buffer.allocUnsafe(READ_SIZE);
    fs.read(this.fd, buf, 0, READ_SIZE, null, (err, n) => {
      this.reading = false;
      if (this.sock !== this) {
        this._close(); // the connection ended while this read was in flight
      } else if (err && err.code === 'EINTR') {
        this._read();
      } else if (err || n === 0) {
        if (err) this.lastError = err;
        this._detach(this);
      } else {
        this.answered = true;
        this._data(this, buf.subarray(0, n));
        this._read();
      }
    });
  }

  _idle(sock) {
    if (sock !== this) super._idle(sock);
  }

  /** Called by `_detach` when the connection over the thread pool ends. */
  destroy() {
    if (!this.reading) this._close(); // else when the read in flight returns: its fd stays ours till then
  }

  _close() {
    if (this.fd < 0) return;
    const fd = this.fd;
    this.fd = -1;
    try {
      fs.closeSync(fd);
    } catch (_err) { /* closed already */ }
  }
}

/**
 * The lane of a runtime with one invocation at a time: over the socket the router handed over
 * (`_ROUTER_RUNTIME_FD`, removed from the environment the function sees), else over TCP.
 */
function firstLane(address, fdText) {
  const fd = Number(fdText);
  if (fdText && Number.isInteger(fd) && fd > 2) return new FdLane(address, fd);
  return new Lane(address);
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
  FdLane,
  Lane,
  RuntimeApiError,
  errorPath,
  firstLane,
  parseAddress,
  responsePath,
};
