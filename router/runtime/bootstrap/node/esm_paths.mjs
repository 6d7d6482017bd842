// ES module resolution from layers and installed dependencies, as Lambda's Node.js 18+ runtimes do it:
// `import` does not read NODE_PATH, so a bare specifier that Node's own resolution cannot find is looked
// up again from each NODE_PATH directory (a layer's nodejs/node_modules, nodejs/nodeNN/node_modules, the
// dependency cache), in NODE_PATH's order. Registered by bootstrap.cjs (module.register) only when
// NODE_PATH holds more than the function's code directory.
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const DIRS = (process.env.NODE_PATH || '').split(path.delimiter).filter(Boolean);

function isBare(specifier) {
  return !/^(\.{1,2}\/|\/|[a-zA-Z][a-zA-Z0-9+.-]*:)/.test(specifier);
}

export async function resolve(specifier, context, nextResolve) {
  try {
    return await nextResolve(specifier, context);
  } catch (err) {
    if (err?.code !== 'ERR_MODULE_NOT_FOUND' || !isBare(specifier)) throw err;
    for (const dir of DIRS) {
      // Node looks in <parent's dir>/node_modules: a parent beside the node_modules directory.
      const base = path.basename(dir) === 'node_modules' ? path.dirname(dir) : dir;
      try {
        return await nextResolve(specifier, { ...context, parentURL: pathToFileURL(path.join(base, 'index.mjs')).href });
      } catch (again) {
        if (again?.code !== 'ERR_MODULE_NOT_FOUND') throw again;
      }
    }
    throw err;
  }
}
