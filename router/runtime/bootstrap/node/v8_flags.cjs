'use strict';
/**
 * Lambda's node flags (--expose-gc and the heap sizes, see router/runtime/nodejs.py) are V8 flags, and
 * V8 accepts a code cache only when its flags hash as the cache's did: with them, node rejects its own
 * embedded code cache, so every built-in module loaded after start-up (net and the streams below it,
 * then whatever the function requires: http, crypto, ...) is compiled from source, ~10-15 ms of a cold
 * start. These flags act once, when V8 starts (the heap limits are set, `gc` is installed in the main
 * context): put back to their defaults now, they keep their effect and the cache is accepted again.
 * The one thing lost: a context the function creates with `vm` has no `gc` of its own.
 *
 * The entry (entry.cjs) does it before it compiles the bootstrap, whose code cache the router made under
 * the default flags; bootstrap.cjs does it again first thing when run from its sources (a no-op after).
 */
function acceptBuiltinCodeCache() {
  const v8 = v8Binding() || require('v8');
  for (const flag of ['--no-expose-gc', '--max-semi-space-size=0', '--max-old-space-size=0']) {
    v8.setFlagsFromString(flag);
  }
}

/**
 * V8's setFlagsFromString without `node:v8`, which loads the streams, compiled from source while the
 * flags are still set (~8 ms, most of what the reset saves). process.binding('v8') is deprecated
 * (DEP0111): its one-time warning is silenced for the call, not for the function; null when this node
 * no longer has it, or when something else already set process.noDeprecation.
 */
function v8Binding() {
  let binding = null;
  try {
    if (process.noDeprecation === true) {
      binding = process.binding('v8');
    } else if (Object.getOwnPropertyDescriptor(process, 'noDeprecation') === undefined) {
      process.noDeprecation = true;
      try {
        binding = process.binding('v8');
      } finally {
        delete process.noDeprecation;
      }
    }
  } catch (_err) {
    return null;
  }
  return binding !== null && typeof binding.setFlagsFromString === 'function' ? binding : null;
}

module.exports = { acceptBuiltinCodeCache };
