import { createServer } from 'node:net'
import type { FastifyInstance } from 'fastify'
import pino from 'pino'
import { buildAdminApp } from '../../src/admin/app.ts'
import { buildApp } from '../../src/app.ts'
import { loadConfig, type Config } from '../../src/config.ts'
import type { Database } from '../../src/db/client.ts'
import { loggerOptions } from '../../src/logger.ts'
import { issueApiToken, createPrincipal } from '../../src/principals/store.ts'
import { startRuntime, type Runtime, type RuntimeOptions } from '../../src/runtime.ts'
import { createTestDatabase, type Teardown } from './database.ts'

export interface TestServer {
  app: FastifyInstance
  admin: FastifyInstance
  runtime: Runtime
  config: Config
  database: Database
  /** PostgreSQL URL of this test's database (undefined on the embedded database). */
  databaseUrl: string | undefined
  /** http://localhost:PORT when listening, otherwise the configured PUBLIC_URL. */
  baseUrl: string
  adminUrl: string
  /** Lines the server logged (JSON), for tests that look at logs. */
  logs: string[]
  close: () => Promise<void>
}

export interface TestServerOptions {
  env?: Record<string, string>
  /** Listen on real loopback ports (for SDK clients, CLI, browsers). Default: inject only. */
  listen?: boolean
  database?: Database
  databaseUrl?: string
  logLevel?: string
  /** Runtime settings beyond the environment (e.g. shorter listen-stream keep-alives). */
  runtime?: Pick<RuntimeOptions, 'listen' | 'authenticator' | 'external'>
}

export async function freePort (): Promise<number> {
  for (;;) {
    const port = await portTheKernelPicks()
    if (!handedOut.has(port)) {
      handedOut.add(port)
      return port
    }
  }
}

/**
 * Ports freePort has handed out in this process. The kernel may pick a port it just freed again,
 * and a test that asks twice in a row (PORT, then ADMIN_PORT) must get two different ports.
 */
const handedOut = new Set<number>()

async function portTheKernelPicks (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      server.close(() => { resolve(typeof address === 'object' && address !== null ? address.port : 0) })
    })
  })
}

/** A whole server (runtime + public app + admin app) on a fresh database, closed at teardown. */
export async function startTestServer (t: Teardown, options: TestServerOptions = {}): Promise<TestServer> {
  let database = options.database
  let databaseUrl = options.databaseUrl
  if (database === undefined) {
    const created = await createTestDatabase(t)
    database = created.database
    databaseUrl = created.url
  }
  const port = options.listen === true ? await freePort() : 8088
  const adminPort = options.listen === true ? await freePort() : 8089
  const config = loadConfig({
    PORT: String(port),
    ADMIN_PORT: String(adminPort),
    HOST: '127.0.0.1',
    PUBLIC_URL: `http://localhost:${port}`,
    LOG_LEVEL: options.logLevel ?? 'silent',
    ...(databaseUrl !== undefined ? { DATABASE_URL: databaseUrl } : { DATA_DIR: 'memory://' }),
    ...options.env
  })
  const logs: string[] = []
  // The production logger's options (redaction, serializers), never pretty: tests read JSON lines.
  const log = pino(loggerOptions(config.logLevel, false), { write: (line: string) => { logs.push(line) } })
  const runtime = await startRuntime(config, log, { ...options.runtime, database, maintenance: false })
  const app = await buildApp(runtime)
  const admin = await buildAdminApp(runtime)
  if (options.listen === true) {
    await app.listen({ host: '127.0.0.1', port })
    await admin.listen({ host: '127.0.0.1', port: adminPort })
  } else {
    await app.ready()
    await admin.ready()
  }
  let closed = false
  const close = async (): Promise<void> => {
    if (closed) return
    closed = true
    runtime.release()
    await Promise.all([app.close(), admin.close()])
    await runtime.close()
  }
  t.teardown(close)
  return {
    app,
    admin,
    runtime,
    config,
    database,
    databaseUrl,
    baseUrl: options.listen === true ? `http://localhost:${port}` : config.publicUrl,
    adminUrl: `http://127.0.0.1:${adminPort}`,
    logs,
    close
  }
}

/** Creates a principal and an API token for it; returns the token. */
export async function principalWithToken (server: TestServer, name: string, scopes = 'bus:read bus:write'): Promise<string> {
  await createPrincipal(server.database.db, name, scopes).catch((err: Error) => {
    if (!/exists/.test(err.message)) throw err
  })
  const issued = await issueApiToken(server.database.db, { principal: name, scopes })
  return issued.token
}

let nextId = 1
/** POST one JSON-RPC request to /mcp through inject; returns status, headers and parsed body. */
export async function rpc (server: TestServer, token: string | undefined, method: string, params: unknown = {}, headers: Record<string, string> = {}) {
  const response = await server.app.inject({
    method: 'POST',
    url: '/mcp',
    headers: {
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      ...(token !== undefined ? { authorization: `Bearer ${token}` } : {}),
      ...headers
    },
    payload: { jsonrpc: '2.0', id: nextId++, method, params }
  })
  const body = response.body === '' ? undefined : JSON.parse(response.body)
  return { status: response.statusCode, headers: response.headers, body }
}

/** tools/call through inject; returns the parsed JSON of the first text content and isError. */
export async function callTool (server: TestServer, token: string, name: string, args: Record<string, unknown> = {}) {
  const response = await rpc(server, token, 'tools/call', { name, arguments: args })
  if (response.status !== 200) throw new Error(`tools/call ${name}: HTTP ${response.status} ${JSON.stringify(response.body)}`)
  const result = response.body.result as { content: Array<{ type: string, text: string }>, isError?: boolean, structuredContent?: unknown }
  if (result === undefined) throw new Error(`tools/call ${name}: ${JSON.stringify(response.body)}`)
  const text = result.content[0]?.text ?? ''
  let data: unknown
  try { data = JSON.parse(text) } catch { data = text }
  return { isError: result.isError === true, data: data as any, text, result }
}
