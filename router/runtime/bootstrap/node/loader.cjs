'use strict';
/**
 * Loading the function's handler as Lambda's Node runtime does (the RIC's UserFunction.js for the
 * nodejs20.x/22.x client, function/*.ts for the nodejs24.x client), and its Runtime.* errors.
 *
 * `_HANDLER` is `[dir/]module.export[.nested]`: the module is looked up under LAMBDA_TASK_ROOT as is,
 * then as .js (CommonJS, or an ES module when the nearest package.json says "type": "module"), .mjs
 * and .cjs, then by Node's own resolution (node_modules). "modern" is the nodejs24.x client: every
 * file goes through import(), and a missing export is also looked up on the module's default export.
 */

const fs = require('fs');
const path = require('path');
const { pathToFileURL } = require('url');

// `import()` of the one-file bootstrap is the entry's (entry.cjs): a script compiled by `vm`, as the entry
// compiles it from the router's code cache, has no module loader of its own. From the sources: node's.
// eslint-disable-next-line no-undef
const importModule = typeof __routerImport === 'function' ? __routerImport : (url) => import(url);

function runtimeError(name) {
  const cls = class extends Error {};
  Object.defineProperty(cls, 'name', { value: name });
  cls.prototype.name = `Runtime.${name}`;
  return cls;
}

const ImportModuleError = runtimeError('ImportModuleError');
const HandlerNotFound = runtimeError('HandlerNotFound');
const MalformedHandlerName = runtimeError('MalformedHandlerName');
const UserCodeSyntaxError = runtimeError('UserCodeSyntaxError');
const CallbackHandlerDeprecated = runtimeError('CallbackHandlerDeprecated');

const FUNCTION_EXPR = /^([^.]*)\.(.*)$/;

function importFile(file) {
  return importModule(pathToFileURL(file).href);
}

function requireIfExists(file) {
  return fs.existsSync(file) ? require(file) : undefined;
}

async function importIfExists(file) {
  return fs.existsSync(file) ? importFile(file) : undefined;
}

/** "type": "module" in the nearest package.json above `folder` (none, or a node_modules: false). */
function folderIsModule(folder) {
  for (;;) {
    if (folder.endsWith('/node_modules')) return false;
    const pj = path.join(folder, 'package.json');
    if (fs.existsSync(pj)) {
      try {
        const pkg = JSON.parse(fs.readFileSync(pj));
        if (pkg) return pkg.type === 'module';
      } catch (e) {
        console.warn(`${pj} cannot be read, it will be ignored for ES module detection purposes.`, e);
        return false;
      }
    }
    if (folder === '/') return false;
    folder = path.resolve(folder, '..');
  }
}

async function loadClassic(appRoot, moduleRoot, moduleName) {
  const file = path.resolve(appRoot, moduleRoot, moduleName);
  const extensionless = requireIfExists(file);
  if (extensionless) return extensionless;
  const isModule = fs.existsSync(file + '.js') && folderIsModule(path.dirname(file + '.js'));
  if (!isModule) {
    const loaded = requireIfExists(file + '.js');
    if (loaded) return loaded;
  }
  const loaded = (isModule && (await importIfExists(file + '.js')))
    || (await importIfExists(file + '.mjs'))
    || requireIfExists(file + '.cjs');
  if (loaded) return loaded;
  return require(require.resolve(moduleName, { paths: [appRoot, moduleRoot] }));
}

async function loadModern(appRoot, moduleRoot, moduleName) {
  const file = path.resolve(appRoot, moduleRoot, moduleName);
  for (const extension of ['', '.js', '.mjs', '.cjs']) {
    const loaded = await importIfExists(file + extension);
    if (loaded) return loaded;
  }
  return require(require.resolve(moduleName, { paths: [appRoot, path.join(appRoot, moduleRoot)] }));
}

function findIn(handlerPath, object) {
  return handlerPath.split('.').reduce((nested, key) => nested && nested[key], object);
}

/**
 * The handler function named by `handlerString`, or a Runtime.* error (or whatever the module threw
 * while loading). `modern`: the nodejs24.x client's rules.
 */
async function loadHandler(appRoot, handlerString, modern) {
  if (handlerString.includes('..')) {
    throw new MalformedHandlerName(`'${handlerString}' is not a valid handler name. Use absolute paths `
      + 'when specifying root directories in handler names.');
  }
  const base = path.basename(handlerString);
  const moduleRoot = handlerString.substring(0, handlerString.indexOf(base));
  const match = base.match(FUNCTION_EXPR);
  if (!match) throw new MalformedHandlerName('Bad handler');
  const [, moduleName, handlerPath] = match;
  let loaded;
  try {
    loaded = modern
      ? await loadModern(appRoot, moduleRoot.replace(/\/$/, ''), moduleName)
      : await loadClassic(appRoot, moduleRoot, moduleName);
  } catch (e) {
    if (e instanceof SyntaxError) {
      const error = new UserCodeSyntaxError(String(e));
      if (modern) error.stack = e.stack;
      throw error;
    }
    if (e && e.code === 'MODULE_NOT_FOUND') throw new ImportModuleError(String(e));
    throw e;
  }
  let handler = findIn(handlerPath, loaded);
  if (!handler && modern && loaded && typeof loaded === 'object' && 'default' in loaded) {
    handler = findIn(handlerPath, loaded.default);
  }
  if (!handler) throw new HandlerNotFound(`${handlerString} is undefined or not exported`);
  if (typeof handler !== 'function') throw new HandlerNotFound(`${handlerString} is not a function`);
  return handler;
}

module.exports = { CallbackHandlerDeprecated, loadHandler };
