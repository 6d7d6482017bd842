'use strict';
/**
 * The router's Node.js runtime: runs `_HANDLER` from LAMBDA_TASK_ROOT against the Lambda Runtime API
 * at AWS_LAMBDA_RUNTIME_API, as Lambda's Node runtime (aws-lambda-nodejs-runtime-interface-client)
 * does. Plain Node, no npm dependencies.
 *
 * Two behaviours, chosen as Lambda chooses its client:
 * - classic (nodejs20.x, nodejs22.x; the RIC 3.x): async handlers and callback handlers
 *   `(event, context, callback)`, context.done/succeed/fail, callbackWaitsForEmptyEventLoop (the
 *   result of a callback is sent once the event loop is empty), only the first result counts;
 * - modern (nodejs24.x and later, or any version with AWS_LAMBDA_MAX_CONCURRENCY > 1; the RIC 4.x):
 *   `await handler(event, context)`; a handler declaring 3 parameters is refused at init
 *   (Runtime.CallbackHandlerDeprecated). With AWS_LAMBDA_MAX_CONCURRENCY = N > 1, N `/next` requests
 *   are kept outstanding, each on its own connection, and handlers run concurrently in this process
 *   (Lambda Managed Instances; Lambda also spreads them over worker threads, this runtime does not).
 *
 * Output: everything the function wrote reaches stdout/stderr (pipes) before its result is posted.
 * An uncaught exception or unhandled rejection ends the process (129, 128) after posting the error
 * for the invocation in progress (classic and modern single-invocation mode) or for init.
 */

require('./v8_flags.cjs').acceptBuiltinCodeCache(); // first: see v8_flags.cjs

const { API, ERROR_TYPE_HEADER, Lane, errorPath, firstLane, responsePath } = require('./rapid.cjs');
const { patchConsole } = require('./logging.cjs');
const { CallbackHandlerDeprecated, loadHandler } = require('./loader.cjs');
const streaming = require('./streaming.cjs');

// The clock of `Router-Duration` (microseconds from taking an event to posting its result, sent with each
// result: the router's pool counts it as the environment's busy time, where its own clock would add the
// time a result waits for its busy event loop). Taken now: a function faking timers does not change it.
const clock = process.hrtime.bigint;

// `import` of a package from a layer or the dependency cache (NODE_PATH beyond the code directory), as
// Lambda's Node.js 18+ runtimes resolve ES module dependencies from layers: a resolve hook (esm_paths.mjs).
(function registerEsmPaths() {
  const dirs = (process.env.NODE_PATH || '').split(require('path').delimiter).filter(Boolean);
  if (dirs.length < 2) return; // node:module only when needed: ~0.25 ms of a cold start
  const register = require('module').register;
  if (typeof register === 'function') {
    register(require('url').pathToFileURL(require('path').join(__dirname, 'esm_paths.mjs')).href);
  }
})();

const REQUEST_ID = Symbol.for('aws.lambda.runtime.requestId');
// What the event loop running empty means for the invocation in progress, where Lambda's client keeps it
// (BeforeExitListener.js): tracing libraries wrap the function they find there.
const BEFORE_EXIT = Symbol.for('aws.lambda.beforeExit');

const CALLBACK_ERROR_NODEJS24 = 'ERROR: AWS Lambda has removed support for callback-based function handlers '
  + 'starting with Node.js 24. You need to modify this function to use a supported handler signature to '
  + 'use Node.js 24 or later. For more information see '
  + 'https://docs.aws.amazon.com/lambda/latest/dg/nodejs-handler.html.';
const callbackErrorManagedInstances = (major) => `ERROR: AWS Lambda does not support callback-based `
  + `function handlers when using Node.js ${major} with Managed Instances. To use Managed Instances, modify `
  + 'this function to use a supported handler signature. For more information see '
  + 'https://docs.aws.amazon.com/lambda/latest/dg/nodejs-handler.html.';

// --- errors (the RIC's Errors.js) ---------------------------------------------------------------------

class NodeJsExit extends Error {
  constructor() {
    super('The Lambda runtime client detected an unexpected Node.js exit code. This is most commonly '
      + 'caused by a Promise that was never settled. For more information, see '
      + 'https://nodejs.org/docs/latest/api/process.html#exit-codes');
  }
}
NodeJsExit.prototype.name = 'Runtime.NodeJsExit';

class UnhandledPromiseRejection extends Error {
  constructor(reason, promise) {
    super(reason);
    this.reason = reason;
    this.promise = promise;
  }
}
UnhandledPromiseRejection.prototype.name = 'Runtime.UnhandledPromiseRejection';

function isErrorLike(obj) {
  return obj && typeof obj.name === 'string' && obj.name && typeof obj.message === 'string' && obj.message
    && typeof obj.stack === 'string' && obj.stack;
}

/** The error as the Runtime API takes it: {errorType, errorMessage, trace}. */
function toRapidResponse(error) {
  try {
    if (require('util').types.isNativeError(error) || isErrorLike(error)) {
      return {
        errorType: error.name?.replaceAll('\x7F', '%7F'),
        errorMessage: error.message?.replaceAll('\x7F', '%7F'),
        trace: error.stack.replaceAll('\x7F', '%7F').split('\n'),
      };
    }
    return { errorType: typeof error, errorMessage: error.toString(), trace: [] };
  } catch (_err) {
    return {
      errorType: 'handled',
      errorMessage: 'callback called with Error argument, but there was a problem while retrieving one or '
        + 'more of its message, name, and stack',
    };
  }
}

// --- process-wide state -------------------------------------------------------------------------------

const env = process.env;
const runtimeMajor = Number((/nodejs(\d+)\.x$/.exec(env.AWS_EXECUTION_ENV || '') || [])[1])
  || Number(process.versions.node.split('.')[0]);
const maxConcurrency = Math.max(1, parseInt(env.AWS_LAMBDA_MAX_CONCURRENCY || '1', 10) || 1);
const concurrent = maxConcurrency > 1;
const modern = runtimeMajor >= 24 || concurrent;

let phase = 'init'; // then 'ready' once the handler is loaded
let current = null; // the invocation in progress (single-invocation modes): {id, lane, settled}
global[BEFORE_EXIT] = noop;
let logError = null;
let storage = null; // AsyncLocalStorage of request ids (concurrent mode)

function noop() {}

function requestIdText() {
  if (storage !== null) return storage.getStore() ?? '-';
  const id = global[REQUEST_ID];
  return modern && id === undefined ? '-' : id;
}

// process.stdout/stderr are made on first use (a pipe stream costs a millisecond or two at a cold
// start): remember which exist, so that checking them for unwritten output does not make them.
const stdio = [];
let stdoutMade = false;

function trackStdio(name) {
  const descriptor = Object.getOwnPropertyDescriptor(process, name);
  if (descriptor === undefined || typeof descriptor.get !== 'function' || !descriptor.configurable) {
    stdio.push(process[name]);
    if (name === 'stdout') stdoutMade = true;
    return;
  }
  let stream = null;
  Object.defineProperty(process, name, {
    configurable: true,
    enumerable: descriptor.enumerable,
    get() {
      if (stream === null) {
        stream = descriptor.get.call(process);
        stdio.push(stream);
        if (name === 'stdout') stdoutMade = true;
      }
      return stream;
    },
  });
}

/**
 * Write a console record to stdout: straight to fd 1 (synchronously, as process.stdout writes to a pipe
 * on Linux, and as Lambda's client writes its records to its log fd), so that logging does not make
 * the stdout stream (on a pipe, a `net` socket: ~2-3 ms of a cold start). Once the function has made
 * process.stdout, through it, behind whatever it holds; so too what a direct write could not take.
 */
function writeStdout(text) {
  if (stdoutMade) {
    process.stdout.write(text);
    return;
  }
  const data = Buffer.from(text, 'utf8');
  let offset = 0;
  try {
    while (offset < data.length) offset += require('fs').writeSync(1, data, offset);
  } catch (_err) {
    process.stdout.write(data.subarray(offset));
  }
}

/** Call `fn` once stdout and stderr have handed everything written so far to their pipes. */
function whenFlushed(fn) {
  let waiting = 0;
  for (const stream of stdio) if (stream.writableLength > 0) waiting += 1;
  if (waiting === 0) {
    fn();
    return;
  }
  const one = () => {
    waiting -= 1;
    if (waiting === 0) fn();
  };
  for (const stream of stdio) if (stream.writableLength > 0) stream.write('', one);
}

function exitAfterFlush(code) {
  whenFlushed(() => process.exit(code));
}

function serialize(value) {
  try {
    return JSON.stringify(value === undefined ? null : value);
  } catch (_err) {
    const error = new Error('Unable to stringify response body');
    if (modern) error.name = 'Runtime.JSONStringifyError';
    throw error;
  }
}

function errorRequest(err) {
  const response = toRapidResponse(err);
  let body;
  try {
    body = JSON.stringify(response);
  } catch (_e) {
    body = JSON.stringify({ errorType: String(response.errorType), errorMessage: String(response.errorMessage),
      trace: [] });
  }
  return { body, headers: { [ERROR_TYPE_HEADER]: response.errorType } };
}

// --- the context object ---------------------------------------------------------------------------------

function parseJsonHeader(value, name) {
  if (value === undefined) return undefined;
  try {
    return JSON.parse(value);
  } catch (err) {
    throw new Error(`Cannot parse ${name} as json: ${err.toString()}`);
  }
}

function contextData(headers) {
  const deadline = Number(headers['lambda-runtime-deadline-ms']);
  const data = {
    functionVersion: env.AWS_LAMBDA_FUNCTION_VERSION,
    functionName: env.AWS_LAMBDA_FUNCTION_NAME,
    memoryLimitInMB: env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    logGroupName: env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: env.AWS_LAMBDA_LOG_STREAM_NAME,
    clientContext: parseJsonHeader(headers['lambda-runtime-client-context'], 'ClientContext'),
    identity: parseJsonHeader(headers['lambda-runtime-cognito-identity'], 'CognitoIdentity'),
    invokedFunctionArn: headers['lambda-runtime-invoked-function-arn'],
    awsRequestId: headers['lambda-runtime-aws-request-id'],
    tenantId: headers['lambda-runtime-aws-tenant-id'],
    getRemainingTimeInMillis: () => deadline - Date.now(),
  };
  if (modern) data.xRayTraceId = headers['lambda-runtime-trace-id'];
  return data;
}

function forwardXRay(headers) {
  const trace = headers['lambda-runtime-trace-id'];
  if (trace) env._X_AMZN_TRACE_ID = trace;
  else delete env._X_AMZN_TRACE_ID;
}

// --- results ---------------------------------------------------------------------------------------------

let statusFd;  // /proc/self/status, opened at the first result (undefined: not yet; null: none)
let statusBuf = null;
let fs = null;

/**
 * This process's peak resident set and thread count (`VmHWM` kB and `Threads` of /proc/self/status)
 * as the `Router-Memory` header's value, or null: the router takes Max Memory Used from it instead of
 * reading the file on its event loop after every invocation.
 */
function ownMemory() {
  if (statusFd === undefined) {
    fs = require('fs');
    statusBuf = Buffer.alloc(8192);
    try {
      statusFd = fs.openSync('/proc/self/status', 'r');
    } catch {
      statusFd = null;
    }
  }
  if (statusFd === null) return null;
  try {
    const text = statusBuf.toString('latin1', 0, fs.readSync(statusFd, statusBuf, 0, 8192, 0));
    const hwm = /VmHWM:\s*(\d+) kB/.exec(text);
    const threads = /Threads:\s*(\d+)/.exec(text);
    return hwm && threads ? `${hwm[1]} ${threads[1]}` : null;
  } catch {
    return null;
  }
}

/**
 * A settled invocation whose result is not posted yet (one invocation at a time): {exitCode} is set when
 * an uncaught error comes first (see `fatal`).
 */
let unposted = null;

/**
 * Post the result of `invocation` (after its output is flushed) and ask its lane for the next event.
 * One invocation at a time, the post waits for the end of this turn of the event loop: Lambda's client
 * posts the result, then asks for the next event from a `setImmediate`, so an unhandled rejection or an
 * uncaught exception of the same turn (a promise the handler left rejected) comes before that ask. It
 * then exits the process (128, 129) without asking: the result stands, and the next event goes to a new
 * environment. Here the result is posted alone in that case, then the process exits.
 */
function send(invocation, path, body, headers, onEvent) {
  if (invocation.settled) return;
  invocation.settled = true;
  if (current === invocation) current = null;
  const lane = invocation.lane;
  const post = (pending) => whenFlushed(() => {
    if (unposted === pending) unposted = null;
    const memory = ownMemory();
    const sent = { ...headers, 'Router-Duration': String((clock() - invocation.at) / 1000n) };
    if (memory !== null) sent['Router-Memory'] = memory;
    if (pending !== null && pending.exitCode !== null) {
      const code = pending.exitCode;
      lane.post(path, body, sent).then(() => exitAfterFlush(code), () => exitAfterFlush(code));
      return;
    }
    lane.postThenNext(path, body, sent).then((r) => onEvent(lane, r), nextFailed);
  });
  if (storage !== null) {
    post(null);
    return;
  }
  const pending = { exitCode: null };
  unposted = pending;
  setImmediate(() => post(pending));
}

function sendResult(invocation, result, onEvent) {
  let body;
  try {
    body = serialize(result);
  } catch (err) {
    sendError(invocation, err, onEvent);
    return;
  }
  send(invocation, responsePath(invocation.id), body, undefined, onEvent);
}

function sendError(invocation, err, onEvent) {
  if (invocation.settled) return;
  logError('Invoke Error', err);
  const { body, headers } = errorRequest(err);
  send(invocation, errorPath(invocation.id), body, headers, onEvent);
}

function nextFailed(err) {
  process.stderr.write(`router node runtime: ${err.message}; exiting\n`);
  endDescendants();
  exitAfterFlush(1);
}

/** The pids of the processes below this one (this worker is their subreaper: orphans stay below it). */
function descendants() {
  const fs = require('fs');
  const found = [];
  const seen = new Set([process.pid]);
  let frontier = [process.pid];
  while (frontier.length > 0 && found.length < 10000) {
    const next = [];
    for (const pid of frontier) {
      let tids = [];
      try {
        tids = fs.readdirSync(`/proc/${pid}/task`);
      } catch (_e) {
        continue;
      }
      for (const tid of tids) {
        let text = '';
        try {
          text = fs.readFileSync(`/proc/${pid}/task/${tid}/children`, 'latin1');
        } catch (_e) {
          continue;
        }
        for (const word of text.split(' ')) {
          const child = Number(word);
          if (child > 0 && !seen.has(child)) {
            seen.add(child);
            found.push(child);
            next.push(child);
          }
        }
      }
    }
    frontier = next;
  }
  return found;
}

/**
 * The Runtime API is gone (the router died): end everything this worker started before exiting, or
 * it would be orphaned to init. Stopped first, scanning again until nothing new appears (nothing can
 * fork away), then killed. The router's watchdog does the same from outside; a worker that notices
 * first must not leave its children behind for the moment between.
 */
function endDescendants() {
  const stopped = new Set();
  for (let round = 0; round < 50; round++) {
    const fresh = descendants().filter((pid) => !stopped.has(pid));
    if (fresh.length === 0) break;
    for (const pid of fresh) {
      try {
        process.kill(pid, 'SIGSTOP');
      } catch (_e) { /* gone already */ }
      stopped.add(pid);
    }
  }
  for (const pid of stopped) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch (_e) { /* gone already */ }
  }
}

/** A /next answered with something other than an event: the router is closing this environment. */
function notAnEvent(response) {
  if (response.status === 410) {
    exitAfterFlush(0);
    return;
  }
  process.stderr.write(`router node runtime: /invocation/next answered ${response.status}: `
    + `${response.body.toString('utf8', 0, 200)}; exiting\n`);
  exitAfterFlush(1);
}

// --- classic (RIC 3.x: nodejs20.x, nodejs22.x) -------------------------------------------------------

function classicLoop(handler) {
  const isAsync = handler.constructor?.name === 'AsyncFunction';
  const onEvent = (lane, response) => {
    if (response.status !== 200) {
      notAnEvent(response);
      return;
    }
    const headers = response.headers;
    const id = headers['lambda-runtime-aws-request-id'];
    if (failedEarlier(lane, id)) return;
    global[REQUEST_ID] = id;
    forwardXRay(headers);
    const invocation = { id, lane, settled: false, at: clock() };
    current = invocation;

    let waitForEmptyEventLoop = true;
    let completed = false;
    const complete = (result) => {
      if (completed) {
        console.error('Invocation has already been reported as done. Cannot call complete more than once '
          + 'per invocation.');
        return;
      }
      completed = true;
      sendResult(invocation, result, onEvent);
    };
    const postError = (err) => sendError(invocation, err, onEvent);
    const callback = (err, result) => {
      global[BEFORE_EXIT] = noop;
      if (err !== undefined && err !== null) postError(err);
      else if (!waitForEmptyEventLoop) complete(result);
      else global[BEFORE_EXIT] = () => setImmediate(() => complete(result));
    };
    const done = (err, result) => {
      global[BEFORE_EXIT] = noop;
      if (err !== undefined && err !== null) postError(err);
      else complete(result);
    };
    // Only the first of callback/succeed/fail/done counts (CallbackContext._wrappedCallbackContext).
    let finished = false;
    const once = (fn) => function onlyFirst(...args) {
      if (!finished) {
        fn(...args);
        finished = true;
      }
    };
    const context = {
      get callbackWaitsForEmptyEventLoop() {
        return waitForEmptyEventLoop;
      },
      set callbackWaitsForEmptyEventLoop(value) {
        waitForEmptyEventLoop = value;
      },
      succeed: once((result) => done(null, result)),
      fail: once((err) => (err === undefined || err === null ? done('handled') : done(err, null))),
      done: once(done),
    };
    const firstCallback = once(callback);
    // The event loop ran empty and no result came: an async handler's promise never settled (an
    // error); a plain function that never called back returns null.
    global[BEFORE_EXIT] = () => {
      completed = true;
      if (isAsync) {
        sendError(invocation, new NodeJsExit(), onEvent);
      } else {
        sendResult(invocation, null, onEvent);
      }
    };
    try {
      const result = handler(JSON.parse(response.body), Object.assign(context, contextData(headers)),
        firstCallback);
      if (result && typeof result.then === 'function') {
        result.then(context.succeed, context.fail).catch(context.fail);
      }
    } catch (err) {
      firstCallback(err);
    }
  };
  return onEvent;
}

// --- modern (RIC 4.x: nodejs24.x, Managed Instances) -------------------------------------------------

// One event at a time per lane, each in its own request-id scope: `invoke` runs it, `onExit(invocation,
// onEvent)` is what a process exit while it runs does (the modern and the streaming loop differ only there).
function laneLoop(invoke, onExit) {
  const onEvent = (lane, response) => {
    if (response.status !== 200) {
      notAnEvent(response);
      return;
    }
    const headers = response.headers;
    const id = headers['lambda-runtime-aws-request-id'];
    const invocation = { id, lane, settled: false, at: clock() };
    if (storage !== null) {
      storage.run(id, () => invoke(invocation, response, onEvent));
      return;
    }
    if (failedEarlier(lane, id)) return;
    global[REQUEST_ID] = id;
    forwardXRay(headers);
    current = invocation;
    global[BEFORE_EXIT] = onExit(invocation, onEvent);
    invoke(invocation, response, onEvent);
  };
  return onEvent;
}

function modernLoop(handler) {
  return laneLoop((invocation, response, onEvent) => modernInvoke(handler, invocation, response, onEvent),
    (invocation, onEvent) => () => sendError(invocation, new NodeJsExit(), onEvent));
}

async function modernInvoke(handler, invocation, response, onEvent) {
  let result;
  let failure;
  let failed = false;
  try {
    result = await handler(JSON.parse(response.body), contextData(response.headers));
  } catch (err) {
    failed = true;
    failure = err;
  }
  await new Promise(setImmediate);
  if (current === invocation) global[BEFORE_EXIT] = noop;
  if (failed) sendError(invocation, failure, onEvent);
  else sendResult(invocation, result, onEvent);
}

// --- streaming (awslambda.streamifyResponse; see streaming.cjs) -----------------------------------------

function streamingLoop(handler) {
  // the open response keeps the event loop alive until the stream ends: nothing to do at exit
  return laneLoop((invocation, response, onEvent) => streamingInvoke(handler, invocation, response, onEvent),
    () => noop);
}

function streamingInvoke(handler, invocation, response, onEvent) {
  const lane = invocation.lane;
  const { stream, done } = streaming.openResponseStream({
    host: lane.host,
    port: lane.port,
    path: responsePath(invocation.id),
    hostHeader: lane.hostLine.slice('Host: '.length, -2),
    highWaterMark: handler[streaming.HANDLER_HIGHWATERMARK],
  });
  let waitForEmptyEventLoop = true;
  const context = Object.assign({
    get callbackWaitsForEmptyEventLoop() {
      return waitForEmptyEventLoop;
    },
    set callbackWaitsForEmptyEventLoop(value) {
      waitForEmptyEventLoop = value;
    },
  }, contextData(response.headers));
  const next = () => {
    if (invocation.settled) return;
    invocation.settled = true;
    if (current === invocation) current = null;
    whenFlushed(() => lane.next().then((r) => onEvent(lane, r), nextFailed));
  };
  const failWith = (err) => {
    logError('Invoke Error', err);
    whenFlushed(() => streaming.fail(stream, toRapidResponse(err)));
    done.then(next);
  };
  let result;
  try {
    result = handler(JSON.parse(response.body), stream, context);
  } catch (err) {
    failWith(err);
    return;
  }
  if (!result || typeof result.then !== 'function') {
    failWith('Streaming does not support non-async handlers.');
    return;
  }
  result.then(async (value) => {
    if (value !== undefined) console.warn('Streaming handlers ignore return values.');
    if (!stream.writableFinished && !stream.writableEnded) {
      failWith('Response stream is not finished.');
      return;
    }
    await done;
    next();
  }, failWith);
}

// --- the process ------------------------------------------------------------------------------------------

/**
 * An uncaught exception or unhandled rejection: report it for init or for the invocation in progress,
 * then exit. Right after a result, before it is posted (the same turn of the event loop: see `send`),
 * the result is posted and the process exits without asking for the next event, as Lambda's client
 * does. Later between invocations (a timer left behind by the previous one) it is kept for the next
 * event, which it fails: Lambda freezes an environment between invocations, so there the timer fires
 * when the next invocation thaws it, and the error becomes that invocation's.
 */
function fatal(err, message, code) {
  global[BEFORE_EXIT] = noop;
  logError(message, err);
  const invocation = current;
  if (phase === 'init') {
    postInitError(err, code);
  } else if (invocation !== null && !invocation.settled) {
    failAndExit(invocation, err, code);
  } else if (unposted !== null) {
    if (unposted.exitCode === null) unposted.exitCode = code;
  } else if (phase === 'ready' && storage === null) {
    if (pendingFatal === null) pendingFatal = { err, code };
  } else {
    exitAfterFlush(code);
  }
}

let pendingFatal = null;

function failAndExit(invocation, err, code) {
  invocation.settled = true;
  const { body, headers } = errorRequest(err);
  whenFlushed(() => invocation.lane.post(errorPath(invocation.id), body, headers)
    .then(() => exitAfterFlush(code), () => exitAfterFlush(code)));
}

/** True when an error left by the previous invocation fails this one (see `fatal`). */
function failedEarlier(lane, id) {
  if (pendingFatal === null) return false;
  global[REQUEST_ID] = id;
  failAndExit({ id, lane, settled: false }, pendingFatal.err, pendingFatal.code);
  return true;
}

let initLane = null;

function postInitError(err, code) {
  phase = 'failed';
  const { body, headers } = errorRequest(err);
  whenFlushed(() => {
    const memory = ownMemory();  // the init's peak: the process exits right after the post
    const sent = memory === null ? headers : { ...headers, 'Router-Memory': memory };
    initLane.post(`${API}/init/error`, body, sent)
      .then(() => exitAfterFlush(code), () => exitAfterFlush(code));
  });
}

let runtimeFd; // the Runtime API socket the router handed over at the start, if any

/** What the router hands to its own bootstraps; removed from the environment the function sees. */
function applyRouterLimits() {
  const parent = env._ROUTER_PARENT_PID;
  runtimeFd = env._ROUTER_RUNTIME_FD;
  delete env._ROUTER_PARENT_PID;
  delete env._ROUTER_RLIMIT_AS;
  delete env._ROUTER_RUNTIME_FD;
  if (parent && process.ppid !== Number(parent)) {
    process.exit(1); // the router died before the parent-death signal was armed
  }
}

function setupGlobals() {
  const off = env.AWS_LAMBDA_NODEJS_NO_GLOBAL_AWSLAMBDA;
  if (off === '1' || off === 'true') return;
  globalThis.awslambda = {
    ...globalThis.awslambda,
    streamifyResponse: streaming.streamifyResponse,
    HttpResponseStream: streaming.HttpResponseStream,
  };
}

async function main() {
  applyRouterLimits();
  trackStdio('stdout');
  trackStdio('stderr');
  if (concurrent) {
    storage = new (require('async_hooks').AsyncLocalStorage)();
  }
  logError = patchConsole(requestIdText, toRapidResponse, writeStdout);
  process.on('uncaughtException', (err) => fatal(err, 'Uncaught Exception', 129));
  process.on('unhandledRejection', (reason, promise) => {
    fatal(new UnhandledPromiseRejection(reason, promise), 'Unhandled Promise Rejection', 128);
  });
  process.on('beforeExit', () => global[BEFORE_EXIT]());
  const address = env.AWS_LAMBDA_RUNTIME_API;
  // One invocation at a time: over the socket the router handed over, if it did (rapid.cjs).
  const lanes = [concurrent ? new Lane(address) : firstLane(address, runtimeFd)];
  initLane = lanes[0];
  initLane.connect();
  setupGlobals();
  let handler;
  try {
    handler = await loadHandler(env.LAMBDA_TASK_ROOT || process.cwd(), env._HANDLER || '', modern);
    if (modern && handler.length >= 3 && !streaming.isStreaming(handler)) {
      throw new CallbackHandlerDeprecated(runtimeMajor >= 24
        ? CALLBACK_ERROR_NODEJS24
        : callbackErrorManagedInstances(runtimeMajor));
    }
  } catch (err) {
    if (phase !== 'init') return; // an uncaught error during init has been reported already
    global[BEFORE_EXIT] = noop;
    logError(modern ? 'Init Error' : 'Uncaught Exception', err);
    postInitError(err, 129);
    return;
  }
  if (phase !== 'init') return; // an uncaught error during init has already been reported
  phase = 'ready';
  let onEvent;
  if (streaming.isStreaming(handler)) onEvent = streamingLoop(handler);
  else onEvent = modern ? modernLoop(handler) : classicLoop(handler);
  for (let i = 1; i < maxConcurrency; i++) lanes.push(new Lane(address));
  for (const lane of lanes) lane.next().then((r) => onEvent(lane, r), nextFailed);
}

main();
