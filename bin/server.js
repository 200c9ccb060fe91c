#!/usr/bin/env node
// The server (`npm start`): checks the Node version, then runs src/server.ts as it is.
import './require-node.js'
await import('../src/server.ts')
