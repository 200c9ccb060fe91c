// Loads drizzle-orm without re-reading its package.json for each of its modules (decision 0033).
//
// For every ES module it resolves, Node (24.x) looks up the package scope to learn the file's
// format, and each lookup turns the cached package.json back into an object by spreading it, which
// runs the lazy `exports` getter: a JSON.parse of drizzle-orm's 175 KB exports map, ~460 times per
// process (about 1 s of CPU and as much garbage, in every server, CLI and test process). A relative
// `.js` import from one of drizzle-orm's own ES modules lands in the same package, which has one
// package.json saying "type": "module", so its format is known without the lookup.
import module from 'node:module'

/**
 * What the resolve hook answers for `specifier` imported from `parentURL`: for a relative `.js`
 * import from an ES module under `packageRoot` (a file URL ending in `/`), the resolved URL and its
 * format; otherwise undefined, and Node resolves it as usual.
 */
export function resolveWithinEsmPackage (specifier, parentURL, packageRoot) {
  if (parentURL === undefined || !parentURL.startsWith(packageRoot) || !parentURL.endsWith('.js')) return undefined
  if (!(specifier.startsWith('./') || specifier.startsWith('../')) || !specifier.endsWith('.js')) return undefined
  const url = new URL(specifier, parentURL).href
  if (!url.startsWith(packageRoot)) return undefined
  return { url, format: 'module', shortCircuit: true }
}

/** The installed drizzle-orm's folder as a file URL ending in `/`, or undefined if it is not installed. */
function drizzleRoot () {
  try {
    return new URL('./', import.meta.resolve('drizzle-orm')).href
  } catch {
    return undefined
  }
}

const root = drizzleRoot()
// registerHooks is Node ≥ 22.15 (require-node.js has already refused anything older); without it,
// or without drizzle-orm, everything still loads, only slower.
if (root !== undefined && typeof module.registerHooks === 'function') {
  module.registerHooks({
    resolve (specifier, context, nextResolve) {
      return resolveWithinEsmPackage(specifier, context.parentURL, root) ?? nextResolve(specifier, context)
    }
  })
}
