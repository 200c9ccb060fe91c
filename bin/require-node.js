// Runs before anything else is loaded: refuse an old Node, or a copy under node_modules, with one
// line, not a stack trace about an unknown or unstrippable ".ts" file.
import { realpathSync } from 'node:fs'
import { pathToFileURL } from 'node:url'
import { installProblem, nodeVersionProblem } from './node-version.js'

const here = pathToFileURL(realpathSync(new URL(import.meta.url))).href
const problem = nodeVersionProblem(process.versions.node) ?? installProblem(here)
if (problem !== undefined) {
  process.stderr.write(`bus-mcp: ${problem}\n`)
  process.exit(1)
}
