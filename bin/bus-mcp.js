#!/usr/bin/env node
// The admin CLI (`npx bus-mcp …`): checks the Node version, then runs src/cli.ts as it is.
import './require-node.js'
await import('../src/cli.ts')
