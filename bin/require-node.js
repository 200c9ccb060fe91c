// Runs before anything else is loaded: the server and the CLI are TypeScript run by Node's own
// type stripping, which Node 20 does not have. Refuse an old Node with one line, not a stack trace.
const [major, minor] = process.versions.node.split('.').map(Number)
if (major < 22 || (major === 22 && minor < 18)) {
  process.stderr.write(`bus-mcp: Node.js 22.18 or newer is required (24 LTS recommended); this is ${process.version}\n`)
  process.exit(1)
}
