#!/usr/bin/env node
// The admin CLI (`npx bus-mcp …`): checks the Node version, registers the module hooks,
// then runs src/cli.ts as it is.
import './require-node.js'
import './module-hooks.js'
await import('../src/cli.ts')
