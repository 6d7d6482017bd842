'use strict';
/**
 * console.* as Lambda's Node runtime writes it (aws-lambda-nodejs-runtime-interface-client LogPatch):
 * one record per call on stdout, `<ISO time>\t<request id>\t<LEVEL>\t<util.format(...)>`, or a JSON
 * object with AWS_LAMBDA_LOG_FORMAT=JSON; newlines inside a record become `\r`, so a record stays
 * one line. AWS_LAMBDA_LOG_LEVEL drops the levels below it.
 */

const util = require('util');

const LEVELS = {
  TRACE: { name: 'TRACE', priority: 1 },
  DEBUG: { name: 'DEBUG', priority: 2 },
  INFO: { name: 'INFO', priority: 3 },
  WARN: { name: 'WARN', priority: 4 },
  ERROR: { name: 'ERROR', priority: 5 },
  FATAL: { name: 'FATAL', priority: 6 },
};

const NEWLINES = /\n/g;

function jsonErrorReplacer(_key, value) {
  if (value instanceof Error) {
    return Object.assign({
      errorType: value?.constructor?.name ?? 'UnknownError',
      errorMessage: value.message,
      stackTrace: typeof value.stack === 'string' ? value.stack.split('\n') : value.stack,
    }, value);
  }
  return value;
}

function jsonRecord(requestId, timestamp, level, params) {
  const record = { timestamp, level: level.name, requestId };
  if (params.length === 1) {
    record.message = params[0];
    try {
      return JSON.stringify(record, jsonErrorReplacer);
    } catch (_err) {
      record.message = util.format(record.message);
      return JSON.stringify(record);
    }
  }
  record.message = util.format(...params);
  for (const param of params) {
    if (param instanceof Error) {
      record.errorType = param?.constructor?.name ?? 'UnknownError';
      record.errorMessage = param.message;
      record.stackTrace = typeof param.stack === 'string' ? param.stack.split('\n') : [];
      break;
    }
  }
  return JSON.stringify(record);
}

/** `err` as an Error (a thrown string or object becomes `new Error(err)`), as the RIC logs it. */
function intoError(err) {
  return err instanceof Error ? err : new Error(err);
}

function withEnumerableProperties(value) {
  if (value instanceof Error) {
    const out = Object.assign({ errorType: value.name, errorMessage: value.message, code: value.code }, value);
    if (typeof value.stack === 'string') out.stack = value.stack.split('\n');
    return out;
  }
  return value;
}

/** The RIC's `Errors.toFormatted`: a tab, then the error as JSON. */
function toFormatted(error, toRapidResponse) {
  try {
    return '\t' + JSON.stringify(error, (_k, v) => withEnumerableProperties(v));
  } catch (_err) {
    return '\t' + JSON.stringify(toRapidResponse(error));
  }
}

/**
 * Replace console.* and return `logError(message, err)` (the RIC's structuredConsole.logError).
 * `requestId()` names the invocation a record belongs to; `writeOut(text)` writes a record to stdout.
 */
function patchConsole(requestId, toRapidResponse, writeOut) {
  const json = (process.env.AWS_LAMBDA_LOG_FORMAT || '').toUpperCase() === 'JSON';
  const minimum = LEVELS[(process.env.AWS_LAMBDA_LOG_LEVEL || '').toUpperCase()] || LEVELS.TRACE;
  const write = json
    ? (level, message, params) => {
      const line = jsonRecord(requestId(), new Date().toISOString(), level, [message, ...params]);
      writeOut(line.replace(NEWLINES, '\r') + '\n');
    }
    : (level, message, params) => {
      const text = util.format(message, ...params);
      const line = `${new Date().toISOString()}\t${requestId()}\t${level.name}\t${text}`;
      writeOut(line.replace(NEWLINES, '\r') + '\n');
    };
  const nop = () => {};
  // (message, ...params) as the RIC: console.log() prints "undefined", as on Lambda.
  const make = (level) => (level.priority >= minimum.priority
    ? (message, ...params) => write(level, message, params)
    : nop);
  console.trace = make(LEVELS.TRACE);
  console.debug = make(LEVELS.DEBUG);
  console.info = make(LEVELS.INFO);
  console.log = console.info;
  console.warn = make(LEVELS.WARN);
  console.error = make(LEVELS.ERROR);
  console.fatal = (message, ...params) => write(LEVELS.FATAL, message, params);
  if (json) {
    return (_message, err) => console.error(intoError(err));
  }
  return (message, err) => console.error(message, toFormatted(intoError(err), toRapidResponse));
}

module.exports = { patchConsole };
