// Which Node.js runs the server and the CLI: they are TypeScript run through Node's own type
// stripping (on by default since 22.18 and in every 24), which older versions do not have.
export const MINIMUM_NODE = '22.18'

/** A one-line reason to refuse this Node version, or undefined when it will do. */
export function nodeVersionProblem (version) {
  const [major, minor] = version.replace(/^v/, '').split('.').map(Number)
  if (major > 22 || (major === 22 && minor >= 18)) return undefined
  return `Node.js ${MINIMUM_NODE} or newer is required (24 LTS recommended); this is v${version.replace(/^v/, '')}`
}
