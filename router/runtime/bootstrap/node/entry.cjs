'use strict';
/**
 * What node runs for every Node environment: the router's bootstrap, joined into `bundle.cjs` next to
 * this file (router/runtime/node_bundle.py), compiled from the V8 code cache the router made of it for
 * this node (`bundle-<node version>-<arch>.cache`). A cold start then neither pre-parses the bootstrap's
 * ~50 KB nor compiles its functions one by one as they are first called (~1.5 ms of a cold start). Without
 * a cache, or with one V8 rejects (another node's: V8 checks its version, the source and the flags), the
 * bootstrap compiles as any script does.
 *
 * `node entry.cjs --router-code-cache make` (the router runs it once per node, with nothing of a
 * function's: no user code, no NODE_OPTIONS) compiles the bootstrap with every function compiled, writes
 * the cache, atomically, and prints its path. `... check` prints what V8 makes of the cache: accepted,
 * rejected or none.
 */

const { acceptBuiltinCodeCache } = require('./v8_flags.cjs');
const fs = require('fs');
const path = require('path');
const vm = require('vm');

const BUNDLE = path.join(__dirname, 'bundle.cjs');
const CACHE = path.join(__dirname, `bundle-${process.version}-${process.arch}.cache`);

// V8 checks a code cache against the flags in force: reset Lambda's V8 flags first (see v8_flags.cjs).
acceptBuiltinCodeCache();

function compile(cachedData) {
  const source = fs.readFileSync(BUNDLE, 'utf8');
  // the wrapper is on the bootstrap's first line, as node's own module wrapper: line numbers hold
  return new vm.Script(`(function (require, module, __filename, __dirname, __routerImport) {${source}\n})`,
    { filename: BUNDLE, cachedData });
}

function readCache() {
  try {
    return fs.readFileSync(CACHE);
  } catch (_err) {
    return undefined;
  }
}

function makeCache() {
  const v8 = require('v8');
  v8.setFlagsFromString('--no-lazy'); // every function compiled now, so that the cache holds them all
  const script = compile(undefined);
  v8.setFlagsFromString('--lazy'); // the flags environments compile under, which the cache records
  const temporary = `${CACHE}.${process.pid}`;
  fs.writeFileSync(temporary, script.createCachedData(), { mode: 0o644 });
  fs.renameSync(temporary, CACHE);
  process.stdout.write(`${CACHE}\n`);
}

const mode = process.argv[2] === '--router-code-cache' ? process.argv[3] : undefined;
if (mode === 'make') {
  makeCache();
} else if (mode === 'check') {
  const cachedData = readCache();
  const script = compile(cachedData);
  process.stdout.write(cachedData === undefined ? 'none\n' : script.cachedDataRejected ? 'rejected\n' : 'accepted\n');
} else {
  compile(readCache()).runInThisContext()(require, module, BUNDLE, __dirname, (url) => import(url));
}
