'use strict';
/**
 * Response streaming in the router's Node runtime, as Lambda's client does it (the RIC's
 * UserFunction.js globals, ResponseStream.js, HttpResponseStream.js and Runtime.handleOnceStreaming):
 *
 * - `awslambda.streamifyResponse(handler, {highWaterMark})` marks the handler (the symbol the RIC and
 *   middy/Powertools check); it is called as `handler(event, responseStream, context)`;
 * - `responseStream` is the POST of the invocation's response to the Runtime API with
 *   `Lambda-Runtime-Function-Response-Mode: streaming`, a chunked body written as the handler writes,
 *   on its own connection (Node's `http`, loaded only by a streaming function);
 * - `awslambda.HttpResponseStream.from(stream, {statusCode, headers, cookies})` sets the content type
 *   `application/vnd.awslambda.http-integration-response` and writes the JSON prelude and 8 NUL bytes
 *   before the first chunk;
 * - an error (the handler throws or rejects, a non-async handler, a stream not ended) is sent in the
 *   trailers `Lambda-Runtime-Function-Error-Type` and `Lambda-Runtime-Function-Error-Body` (base64 JSON).
 */

const HANDLER_STREAMING = Symbol.for('aws.lambda.runtime.handler.streaming');
const HANDLER_HIGHWATERMARK = Symbol.for('aws.lambda.runtime.handler.streaming.highWaterMark');
const STREAM_RESPONSE = 'response';
const METADATA_PRELUDE_CONTENT_TYPE = 'application/vnd.awslambda.http-integration-response';
const DELIMITER_LEN = 8;
const ERROR_TYPE_TRAILER = 'Lambda-Runtime-Function-Error-Type';
const ERROR_BODY_TRAILER = 'Lambda-Runtime-Function-Error-Body';

class InvalidStreamingOperation extends Error {}
InvalidStreamingOperation.prototype.name = 'Runtime.InvalidStreamingOperation';

function streamifyResponse(handler, options) {
  handler[HANDLER_STREAMING] = STREAM_RESPONSE;
  if (typeof options?.highWaterMark === 'number') {
    handler[HANDLER_HIGHWATERMARK] = parseInt(options.highWaterMark, 10);
  }
  return handler;
}

class HttpResponseStream {
  static from(underlyingStream, prelude) {
    underlyingStream.setContentType(METADATA_PRELUDE_CONTENT_TYPE);
    const metadataPrelude = JSON.stringify(prelude); // JSON has no NUL byte: the delimiter is unambiguous
    underlyingStream._onBeforeFirstWrite = (write) => {
      write(metadataPrelude);
      write(new Uint8Array(DELIMITER_LEN));
    };
    return underlyingStream;
  }
}

function isStreaming(handler) {
  return handler[HANDLER_STREAMING] === STREAM_RESPONSE;
}

/**
 * Open the streamed response of one invocation: `{stream, done}`, `stream` the writable the handler
 * gets, `done` a promise settled when the Runtime API has answered (or the connection failed).
 * `fail(stream, error)` ends it with the error in the trailers.
 */
function openResponseStream({ host, port, path, hostHeader, highWaterMark }) {
  const http = require('http');
  const net = require('net');
  const agent = new http.Agent({ keepAlive: false });
  if (highWaterMark !== undefined) {
    agent.createConnection = (opts, listener) => net.createConnection({ ...opts, highWaterMark }, listener);
  }
  let resolveDone;
  const done = new Promise((resolve) => {
    resolveDone = resolve;
  });
  const req = http.request({
    host,
    port,
    path,
    method: 'POST',
    agent,
    headers: {
      Host: hostHeader,
      'Lambda-Runtime-Function-Response-Mode': 'streaming',
      Trailer: `${ERROR_TYPE_TRAILER}, ${ERROR_BODY_TRAILER}`,
      'Content-Type': 'application/octet-stream',
    },
  }, (res) => {
    res.resume();
    res.on('end', () => resolveDone({ status: res.statusCode }));
    res.on('aborted', () => resolveDone({ error: new Error('runtime API aborted the response') }));
  });
  req.on('error', (err) => {
    resolveDone({ error: err });
    req.destroy(err);
  });
  let written = false;
  req.setContentType = (contentType) => {
    if (written) throw new InvalidStreamingOperation('Cannot set content-type, too late.');
    req.setHeader('Content-Type', contentType);
  };
  const write = req.write.bind(req);
  req.write = function streamWrite(chunk, encoding, callback) {
    if (typeof chunk !== 'string' && !Buffer.isBuffer(chunk) && chunk?.constructor !== Uint8Array) {
      chunk = JSON.stringify(chunk);
    }
    if (!written && typeof req._onBeforeFirstWrite === 'function') {
      req._onBeforeFirstWrite((piece) => write(piece));
    }
    written = true;
    return write(chunk, encoding, callback);
  };
  const end = req.end.bind(req);
  req.end = function streamEnd(chunk, encoding, callback) {
    if (!written && typeof req._onBeforeFirstWrite === 'function' && typeof chunk !== 'function') {
      req.write(chunk === undefined || chunk === null ? '' : chunk, encoding);
      return end(typeof encoding === 'function' ? encoding : callback);
    }
    written = true;
    return end(chunk, encoding, callback);
  };
  return { stream: req, done };
}

/** End `stream` with `rapidError` ({errorType, errorMessage, trace}) in its trailers. */
function fail(stream, rapidError) {
  if (stream.writableEnded) return;
  stream.addTrailers({
    [ERROR_TYPE_TRAILER]: String(rapidError.errorType).replace(/[\r\n]/g, ' '),
    [ERROR_BODY_TRAILER]: Buffer.from(JSON.stringify(rapidError)).toString('base64'),
  });
  stream.end();
}

module.exports = {
  HANDLER_HIGHWATERMARK,
  HttpResponseStream,
  fail,
  isStreaming,
  openResponseStream,
  streamifyResponse,
};
