#!/usr/bin/env node
// The server (`npm start`): checks the Node version, turns on the compile cache, registers the
// module hooks, then runs src/server.ts as it is.
import './require-node.js'
import './compile-cache.js'
import './module-hooks.js'
await import('../src/server.ts')
