#!/usr/bin/env node
// The admin CLI (`npx bus-mcp …`): checks the Node version, turns on the compile cache,
// registers the module hooks, then runs src/cli.ts as it is.
import './require-node.js'
import './compile-cache.js'
import './module-hooks.js'
await import('../src/cli.ts')
