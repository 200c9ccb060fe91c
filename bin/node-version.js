// Which Node.js runs the server and the CLI: they are TypeScript run through Node's own type
// stripping (on by default since 22.18 and in every 24), which older versions do not have.
export const MINIMUM_NODE = '22.18'

/** A one-line reason to refuse this Node version, or undefined when it will do. */
export function nodeVersionProblem (version) {
  const [major, minor] = version.replace(/^v/, '').split('.').map(Number)
  if (major > 22 || (major === 22 && minor >= 18)) return undefined
  return `Node.js ${MINIMUM_NODE} or newer is required (24 LTS recommended); this is v${version.replace(/^v/, '')}`
}

/**
 * A one-line reason why this copy cannot run, or undefined: Node never strips types under
 * node_modules, so a copying install (tarball, git URL, --install-links) cannot run src/.
 * `npm link` and `npm install -g .` make a symlink, whose real path is the checkout's (decision 0026).
 */
export function installProblem (launcherUrl) {
  if (!new URL(launcherUrl).pathname.split('/').includes('node_modules')) return undefined
  return 'installed as a copy under node_modules, where Node does not run TypeScript; run it from a checkout (npx bus-mcp inside it), or "npm link" the checkout for a global bus-mcp'
}
