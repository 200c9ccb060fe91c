// Runs before anything else is loaded: refuse an old Node with one line, not a stack trace
// about an unknown ".ts" extension.
import { nodeVersionProblem } from './node-version.js'

const problem = nodeVersionProblem(process.versions.node)
if (problem !== undefined) {
  process.stderr.write(`bus-mcp: ${problem}\n`)
  process.exit(1)
}
