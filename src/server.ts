#!/usr/bin/env node
import closeWithGrace from 'close-with-grace'
import { buildAdminApp } from './admin/app.ts'
import { buildApp } from './app.ts'
import { ConfigError, loadConfig, type Config } from './config.ts'
import { DataDirError } from './db/client.ts'
import { DataDirInUseError } from './db/data-dir-lock.ts'
import { describeDatabaseError } from './db/errors.ts'
import { listenOn } from './lib/listen.ts'
import { createLogger } from './logger.ts'
import { startRuntime } from './runtime.ts'

/** Stops the start with one line naming what is wrong and how to fix it. */
function fail (message: string): never {
  process.stderr.write(`bus-mcp: ${message}\n`)
  process.exit(1)
}

let config: Config
try {
  config = loadConfig()
} catch (err) {
  if (err instanceof ConfigError) fail(`configuration error: ${err.message}`)
  throw err
}

const log = createLogger(config.logLevel)
if (config.rateLimitMultiplier === 0) log.warn('RATE_LIMIT_MULTIPLIER=0: every rate limit is off; use this only for benchmarks and test rigs')

const runtime = await startRuntime(config, log).catch((err: unknown) => {
  if (err instanceof DataDirInUseError || err instanceof DataDirError) fail(err.message)
  const problem = config.databaseUrl === undefined ? undefined : describeDatabaseError(err, config.databaseUrl)
  if (problem !== undefined) fail(problem)
  throw err
})
const app = await buildApp(runtime)
const admin = await buildAdminApp(runtime)

closeWithGrace({ delay: 30_000, logger: log }, async ({ signal, err }) => {
  if (err !== undefined) log.error({ err }, 'shutting down after an error')
  else log.info({ signal }, 'shutting down: finishing in-flight requests')
  // Long-polls answer now with what they have, so the close below does not wait 25 s for them.
  await runtime.bus.stop()
  await Promise.all([app.close(), admin.close()])
  await runtime.close()
})

try {
  await listenOn(app, config.host, config.port)
  await listenOn(admin, config.adminHost, config.adminPort)
} catch (err) {
  const { code } = err as NodeJS.ErrnoException
  if (code === 'EADDRINUSE' || code === 'EACCES' || code === 'EADDRNOTAVAIL') {
    await Promise.allSettled([app.close(), admin.close(), runtime.close()])
    fail(`cannot listen: ${(err as Error).message} (set PORT / ADMIN_PORT, or HOST / ADMIN_HOST)`)
  }
  throw err
}
log.info({ publicUrl: config.publicUrl, mcp: config.resourceUrl, admin: `http://${config.adminHost}:${config.adminPort}`, database: runtime.database.kind }, 'bus-mcp ready')
