#!/usr/bin/env node
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import closeWithGrace from 'close-with-grace'
import { eq } from 'drizzle-orm'
import { buildAdminApp } from './admin/app.ts'
import { buildApp } from './app.ts'
import { ConfigError, loadConfig, type Config } from './config.ts'
import { DataDirError } from './db/client.ts'
import { DataDirInUseError } from './db/data-dir-lock.ts'
import { describeDatabaseError } from './db/errors.ts'
import { postgresDriverProblem } from './db/postgres-driver.ts'
import { principals } from './db/schema.ts'
import { listenOn } from './lib/listen.ts'
import { createLogger } from './logger.ts'
import { startRuntime } from './runtime.ts'

/**
 * How a person here runs the admin CLI, for the suggestions below: `npx bus-mcp` inside the
 * checkout (outside it npx would fetch an unrelated package of that name), else the launcher by
 * its path; with BUS_ADMIN_URL exported first when the admin API is not where the CLI looks by
 * default, and BUS_ADMIN_TOKEN when it needs one.
 */
function cliCommand (config: Config, adminPort: number): { setup: string, command: string } {
  const root = fileURLToPath(new URL('..', import.meta.url))
  const command = `${process.cwd()}/`.startsWith(root) ? 'npx bus-mcp' : `node ${join(root, 'bin', 'bus-mcp.js')}`
  const host = ['0.0.0.0', '::', 'localhost'].includes(config.adminHost) ? '127.0.0.1' : config.adminHost
  const adminUrl = `http://${host.includes(':') ? `[${host}]` : host}:${adminPort}`
  const env = [
    ...(adminUrl === 'http://127.0.0.1:8089' ? [] : [`BUS_ADMIN_URL=${adminUrl}`]),
    ...(config.adminToken === undefined ? [] : ['BUS_ADMIN_TOKEN=<ADMIN_TOKEN>'])
  ]
  return { setup: env.length === 0 ? '' : `export ${env.join(' ')}; `, command }
}

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
// docs/decisions/0020: postgres.js without its connection fix can crash on a database restart.
const driverProblem = postgresDriverProblem()
if (driverProblem !== undefined && config.databaseUrl !== undefined) fail(driverProblem)
if (driverProblem !== undefined) log.warn(`${driverProblem} (unused now: no DATABASE_URL, the embedded database runs)`)
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
  // Long-polls answer now with what they have and listen streams end gracefully, so the close
  // below does not wait for them.
  runtime.release()
  await Promise.all([app.close(), admin.close()])
  await runtime.close()
})

let adminPort = config.adminPort
try {
  await listenOn(app, config.host, config.port)
  adminPort = await listenOn(admin, config.adminHost, config.adminPort)
} catch (err) {
  const { code } = err as NodeJS.ErrnoException
  if (code === 'EADDRINUSE' || code === 'EACCES' || code === 'EADDRNOTAVAIL') {
    await Promise.allSettled([app.close(), admin.close(), runtime.close()])
    fail(`cannot listen: ${(err as Error).message} (set PORT / ADMIN_PORT, or HOST / ADMIN_HOST)`)
  }
  throw err
}
const { setup, command: cli } = cliCommand(config, adminPort)
// Only for the suggestion below: a database gone this very moment does not stop the start here.
const principalCount = await runtime.database.db.$count(principals).catch(() => undefined)
if (config.autoApprovePrincipal !== undefined) {
  const name = config.autoApprovePrincipal
  const [row] = await runtime.database.db.select({ disabledAt: principals.disabledAt }).from(principals).where(eq(principals.name, name)).catch(() => [])
  const state = row === undefined
    ? `; "${name}" does not exist yet, and authorizations fail until it does: ${setup}${cli} principal add ${name}`
    : row.disabledAt !== null ? `; "${name}" is disabled, and authorizations fail until it is enabled: ${setup}${cli} principal enable ${name}` : ''
  log.warn({ autoApprovePrincipal: name }, `AUTO_APPROVE_PRINCIPAL=${name}: any app that registers itself at ${config.publicUrl}/oauth/register ` +
    `is approved at once as ${name}, without a consent page, so anyone who can reach ${config.publicUrl} can act as ${name}. ` +
    `Use it only on a private network, or for a principal whose scopes anyone who finds the URL may have${state}`)
}
log.info({
  publicUrl: config.publicUrl,
  mcp: config.resourceUrl,
  admin: `http://${config.adminHost.includes(':') ? `[${config.adminHost}]` : config.adminHost}:${adminPort}`,
  database: runtime.database.kind,
  next: principalCount === 0
    ? `create a principal and its API token: ${setup}${cli} principal add NAME; ${cli} token issue --principal NAME. MCP clients connect to ${config.resourceUrl}`
    : `MCP clients connect to ${config.resourceUrl} (an API token: ${setup}${cli} token issue --principal NAME)`
}, 'bus-mcp ready')
